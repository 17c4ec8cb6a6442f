//! The explicit HTTP proxy on the gateway (milestone 3).

use ipstack::IpStackTcpStream;

use crate::relay::RelayContext;

pub async fn serve_proxy(_ctx: &RelayContext, _client: IpStackTcpStream) {}
