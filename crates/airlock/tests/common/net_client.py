# The network tests' client, run inside a sandbox: one attempt per command line argument group, one result line
# each ("LABEL: ..."), so a test reads what worked and what did not from one sandbox run.
#
#   resolve LABEL NAME                  the address NAME resolves to, or "error"
#   get LABEL HOST PORT PATH [HOSTHDR]  a raw-socket HTTP/1.1 GET; the status line and body, or "error ..."
#   udp LABEL HOST PORT                 one datagram; "reply" or "noreply"
#   dns LABEL SERVER NAME               an A query for NAME to SERVER:53; "answer", "refused" or "noanswer"
#   fuzz LABEL HOST PORT                hostile DNS, UDP and TCP garbage at the gateway; "done"
#   hold LABEL HOST PORT                to the "hold" server: 100 bytes out, 1000 back ("LABEL: N" bytes received),
#                                       then the connection stays open in a forked child that outlives this
#                                       command (until the sandbox's init kills it)
import os
import random
import socket
import struct
import sys
import time


def result(label, text):
    print(f"{label}: {text}", flush=True)


def resolve(label, name):
    try:
        result(label, socket.gethostbyname(name))
    except OSError as e:
        result(label, f"error {e}")


def get(label, host, port, path, host_header=None):
    try:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            hdr = host_header or host
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {hdr}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = head.split(b"\r\n")[0].decode(errors="replace") if head else "no response"
        result(label, f"{status} | {body.decode(errors='replace').strip()}")
    except OSError as e:
        result(label, f"error {e}")


def udp(label, host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.5)
    try:
        s.sendto(b"hello over udp", (host, int(port)))
        s.recvfrom(65536)
        result(label, "reply")
    except OSError:
        result(label, "noreply")


def dns_query(name, qid=0x1234):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for part in name.split("."):
        q += bytes([len(part)]) + part.encode()
    return q + b"\x00" + struct.pack(">HH", 1, 1)


def dns(label, server, name):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.5)
    try:
        s.sendto(dns_query(name), (server, 53))
        data, _ = s.recvfrom(65536)
        rcode = data[3] & 0x0F
        result(label, "refused" if rcode == 5 else "answer")
    except OSError:
        result(label, "noanswer")


def fuzz(label, host, port):
    rng = random.Random(5)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(3000):
        kind = i % 6
        if kind == 0:
            payload = os.urandom(rng.randrange(0, 1400))
        elif kind == 1:
            # A header that promises many questions and answers, then nothing.
            payload = struct.pack(">HHHHHH", i, 0x0100, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF)
        elif kind == 2:
            # A name whose compression pointer points at itself.
            payload = struct.pack(">HHHHHH", i, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + struct.pack(">HH", 1, 1)
        elif kind == 3:
            # Labels longer than the packet.
            payload = struct.pack(">HHHHHH", i, 0x0100, 1, 0, 0, 0) + b"\x3f" + b"a" * 10
        elif kind == 4:
            q = bytearray(dns_query("allowed.test", i))
            for _ in range(3):
                q[rng.randrange(len(q))] = rng.randrange(256)
            payload = bytes(q)
        else:
            payload = dns_query("x" * 63 + "." + "y" * 63 + ".test", i)
        try:
            u.sendto(payload, ("198.18.0.1", 53))
        except OSError:
            pass
        # UDP garbage to other ports of the gateway and to the allowed name.
        if i % 10 == 0:
            for dst in (("198.18.0.1", rng.randrange(1, 65536)), (host, rng.randrange(1, 65536))):
                try:
                    u.sendto(os.urandom(rng.randrange(0, 512)), dst)
                except OSError:
                    pass
    # TCP garbage: to DNS over TCP, to the proxy, to the allowed name; and connections left half-open.
    held = []
    for i in range(60):
        dst = [("198.18.0.1", 53), ("198.18.0.1", 3128), (host, int(port))][i % 3]
        try:
            s = socket.create_connection(dst, timeout=2)
            s.sendall(os.urandom(rng.randrange(1, 4096)))
            if i % 4 == 0:
                held.append(s)
            else:
                s.close()
        except OSError:
            pass
    for s in held:
        s.close()
    result(label, "done")


def hold(label, host, port):
    s = socket.create_connection((host, int(port)), timeout=5)
    s.sendall(b"\0" * 100)
    got = b""
    while len(got) < 1000:
        chunk = s.recv(1000 - len(got))
        if not chunk:
            break
        got += chunk
    result(label, str(len(got)))
    if os.fork() == 0:
        time.sleep(60)
        os._exit(0)


args = sys.argv[1:]
commands = {
    "resolve": (resolve, 2),
    "get": (get, 4),
    "udp": (udp, 3),
    "dns": (dns, 3),
    "fuzz": (fuzz, 3),
    "hold": (hold, 3),
}
while args:
    name = args.pop(0)
    fn, n = commands[name]
    params = args[:n]
    args = args[n:]
    # An optional Host header for "get": given as "host=NAME".
    if name == "get" and args and args[0].startswith("host="):
        params.append(args.pop(0)[5:])
    fn(*params)
