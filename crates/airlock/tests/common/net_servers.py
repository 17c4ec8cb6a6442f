# The network tests' servers, on the host's loopback only: two HTTP servers (the allowed port and another), an
# HTTPS server with a self-signed certificate, and a UDP echo server. Every connection, TLS server name, request
# and datagram is logged, one line each, so a test can prove what never reached the host.
#
# The "hold" server reads HOLD_IN bytes, answers HOLD_OUT bytes, and then never closes the connection (not even
# when the client does): a connection that stays open until airlock ends it.
#
# usage: net_servers.py LOG CERT KEY     prints {"http": P, "other": P, "tls": P, "udp": P, "hold": P} then
#                                        serves forever.
import http.server
import json
import socket
import socketserver
import ssl
import sys
import threading

log_path, cert, key = sys.argv[1:4]
lock = threading.Lock()


def log(line):
    with lock, open(log_path, "a") as f:
        f.write(line + "\n")


def handler_for(kind, context=None):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            log(f"accept {kind}")
            if context is not None:
                self.request = context.wrap_socket(self.request, server_side=True)
            super().setup()

        def do_GET(self):
            log(f"request {kind} {self.headers.get('Host', '-')} {self.path}")
            body = f"hello from {kind} {self.path}\n".encode()
            if self.path.startswith("/bulk/"):
                body = b"x" * int(self.path.split("/")[2])
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Handler


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        log("error " + str(sys.exc_info()[1]).replace("\n", " "))


def serve(kind, context=None):
    server = Server(("127.0.0.1", 0), handler_for(kind, context))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(cert, key)
tls.sni_callback = lambda sock, name, ctx: log(f"sni {name}")

udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", 0))


def echo():
    while True:
        data, peer = udp.recvfrom(65536)
        log(f"udp {len(data)}")
        udp.sendto(data, peer)


threading.Thread(target=echo, daemon=True).start()

HOLD_IN, HOLD_OUT = 100, 1000
held = []
hold = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
hold.bind(("127.0.0.1", 0))
hold.listen(16)


def hold_one(conn):
    got = b""
    while len(got) < HOLD_IN:
        chunk = conn.recv(HOLD_IN - len(got))
        if not chunk:
            break
        got += chunk
    log(f"hold got {len(got)}")
    conn.sendall(b"y" * HOLD_OUT)
    while conn.recv(65536):
        pass
    log("hold eof")
    held.append(conn)  # kept open, never closed


def hold_serve():
    while True:
        conn, _ = hold.accept()
        log("accept hold")
        threading.Thread(target=hold_one, args=(conn,), daemon=True).start()


threading.Thread(target=hold_serve, daemon=True).start()
ports = {
    "http": serve("http"),
    "other": serve("other"),
    "tls": serve("tls", tls),
    "udp": udp.getsockname()[1],
    "hold": hold.getsockname()[1],
}
print(json.dumps(ports), flush=True)
threading.Event().wait()
