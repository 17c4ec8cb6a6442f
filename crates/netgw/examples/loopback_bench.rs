//! Measures the gateway on this machine (root needed): bulk throughput from a host loopback server to a client
//! in a sandbox namespace, through the gateway vs directly on loopback; added connect latency; and the memory
//! (RSS) of this process serving one sandbox, idle and with 100 open connections.
//!
//! `cargo run --release -p airlock-netgw --example loopback_bench [MIB]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::time::Duration;

use common::{rule, Sandbox};

const CLIENT: &str = r#"
import socket, sys, time
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == 'bulk':
    s = socket.create_connection((host, port))
    s.sendall(b'bulk\n')
    total, start = 0, time.perf_counter()
    buf = bytearray(1 << 20)
    while True:
        n = s.recv_into(buf)
        if n == 0:
            break
        total += n
    print(total, time.perf_counter() - start)
elif mode == 'connect':
    times = []
    for _ in range(200):
        start = time.perf_counter()
        s = socket.create_connection((host, port))
        s.sendall(b'ping\n')
        s.recv(16)
        times.append(time.perf_counter() - start)
        s.close()
    times.sort()
    print(times[len(times) // 2] * 1000)
elif mode == 'hold':
    held = []
    for _ in range(int(sys.argv[4])):
        s = socket.create_connection((host, port))
        s.sendall(b'ping\n')
        s.recv(16)
        held.append(s)
    print(len(held), flush=True)
    time.sleep(3)
"#;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// CPU time (user + system) of this process, in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn main() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("loopback_bench: needs root (network namespace and TUN)");
        std::process::exit(1);
    }
    let mib: usize = std::env::args().nth(1).map_or(512, |a| a.parse().unwrap());
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut first = [0u8; 5];
                if stream.read_exact(&mut first).is_err() {
                    return;
                }
                if &first == b"bulk\n" {
                    let chunk = vec![0u8; 1 << 20];
                    for _ in 0..mib {
                        if stream.write_all(&chunk).is_err() {
                            return;
                        }
                    }
                } else {
                    let _ = stream.write_all(b"pong\n");
                    let _ = stream.read(&mut first); // until the client closes
                }
            });
        }
    });

    let before = rss_kib();
    let sb = Sandbox::start(vec![rule("bench.test", Some(port))], &[("bench.test", IpAddr::V4(Ipv4Addr::LOCALHOST))]);
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss_kib();
    let ticks = cpu_ticks();
    std::thread::sleep(Duration::from_secs(5));
    println!("idle gateway CPU: {} ticks (1/100 s) in 5 s", cpu_ticks() - ticks);
    let script = std::env::temp_dir().join("netgw-bench-client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let run_inside = |args: &str| sb.sh_ok(&format!("python3 {} {args}", script.display()));
    let run_direct = |args: &str| {
        let out = std::process::Command::new("python3").arg(&script).args(args.split(' ')).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let rate = |out: String| {
        let mut f = out.split_whitespace();
        let bytes: f64 = f.next().unwrap().parse().unwrap();
        let secs: f64 = f.next().unwrap().parse().unwrap();
        bytes * 8.0 / secs / 1e9
    };
    let via = rate(run_inside(&format!("bulk bench.test {port}")));
    let direct = rate(run_direct(&format!("bulk 127.0.0.1 {port}")));
    println!("bulk {mib} MiB: gateway {via:.2} Gbit/s, direct loopback {direct:.2} Gbit/s, ratio {:.2}", via / direct);
    let lat_via: f64 = run_inside(&format!("connect bench.test {port}")).trim().parse().unwrap();
    let lat_direct: f64 = run_direct(&format!("connect 127.0.0.1 {port}")).trim().parse().unwrap();
    println!("connect+first byte median: gateway {lat_via:.3} ms, direct {lat_direct:.3} ms");

    let hold = format!("python3 {} hold bench.test {port} 100", script.display());
    let child = std::thread::scope(|s| {
        let h = s.spawn(|| sb.sh_ok(&hold));
        // The client holds its connections for 3 s; sample in the middle.
        std::thread::sleep(Duration::from_millis(2000));
        let busy = rss_kib();
        (h.join().unwrap(), busy)
    });
    println!(
        "RSS of this process: before the sandbox {before} KiB, serving one idle sandbox {idle} KiB, \
         with {} open connections {} KiB (after the bulk transfers)",
        child.0.trim(),
        child.1
    );
    let _ = std::fs::remove_file(script);
}
