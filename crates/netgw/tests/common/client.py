# Clients run inside the test namespace (python3 only, so the tests need no curl/openssl).
import os, random, socket, ssl, struct, sys, threading, time, urllib.error, urllib.request

GATEWAY = '198.18.0.1'


def http(host, port, path, host_header=None):
    import http.client
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {'Host': host_header} if host_header else {}
    c.request('GET', path, headers=headers)
    r = c.getresponse()
    print(r.status)
    sys.stdout.write(r.read().decode())


def get_eof(host, port, path):
    # Reads until the server closes (the server closes first, so the gateway is the side that closes towards
    # the client).
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(f'GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n'.encode())
    data = b''
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    print(data.split(b'\r\n', 1)[0].decode())


def proxy_http(url):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({'http': f'http://{GATEWAY}:3128'}))
    try:
        r = opener.open(url, timeout=10)
        print(r.status)
        sys.stdout.write(r.read().decode())
    except urllib.error.HTTPError as e:
        print(e.code)
        sys.stdout.write(e.read().decode())


def hello(sock, sni):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.wrap_socket(sock, server_hostname=None if sni == '-' else sni).close()
        print('handshake done')
    except (ssl.SSLError, OSError) as e:
        print('handshake failed:', type(e).__name__)


def tls(host, port, sni):
    hello(socket.create_connection((host, int(port)), timeout=10), sni)


def tls_late(host, port, sni, delay):
    # A client that waits before its ClientHello: the gateway has opened the connection by then.
    s = socket.create_connection((host, int(port)), timeout=10)
    time.sleep(float(delay))
    hello(s, sni)


def proxy_connect(host, port, sni):
    s = socket.create_connection((GATEWAY, 3128), timeout=10)
    s.sendall(f'CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n'.encode())
    head = b''
    while b'\r\n\r\n' not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    status = head.split(b'\r\n', 1)[0].decode()
    print(status)
    if ' 200 ' in status:
        hello(s, sni)
    else:
        sys.stdout.write(head.split(b'\r\n\r\n', 1)[-1].decode())


def udp(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1)
    s.sendto(b'hello', (host, int(port)))
    try:
        s.recv(100)
        print('reply')
    except socket.timeout:
        print('timeout')


def ping(host):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(1)
    body = struct.pack('!BBHHH', 8, 0, 0, 1, 1) + b'ping'
    csum = sum(struct.unpack('!%dH' % (len(body) // 2), body))
    csum = ~((csum >> 16) + (csum & 0xffff)) & 0xffff
    s.sendto(body[:2] + struct.pack('!H', csum) + body[4:], (host, 0))
    try:
        s.recv(100)
        print('reply')
    except socket.timeout:
        print('timeout')


def echo_one(host, port, size, results, i):
    try:
        data = b'ECHO' + os.urandom(size)
        s = socket.create_connection((host, int(port)), timeout=30)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)  # half-close: the echo must still come back in full
        got = b''
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        results[i] = True if got == data else (len(got), len(data))
    except OSError as e:
        results[i] = repr(e)


def echo(host, port, count, size):
    count, size = int(count), int(size)
    results = [None] * count
    threads = [threading.Thread(target=echo_one, args=(host, port, size, results, i)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(sum(1 for r in results if r is True), [r for r in results if r is not True][:3])


def hold(host, port, count, seconds):
    held, refused = [], 0
    for _ in range(int(count)):
        try:
            s = socket.create_connection((host, int(port)), timeout=5)
            s.sendall(b'ECHO')
            if s.recv(4) == b'ECHO':
                held.append(s)
            else:
                refused += 1
        except OSError:
            refused += 1
    print(len(held), refused)
    sys.stdout.flush()
    time.sleep(float(seconds))


def idle(host, port, seconds):
    s = socket.create_connection((host, int(port)), timeout=30)
    s.sendall(b'ECHO')
    s.recv(4)
    time.sleep(float(seconds))
    try:
        print('closed' if s.recv(10) == b'' else 'open')
    except ConnectionResetError:
        print('closed')


def dns_query(ident, name, qtype):
    """A DNS query (recursion desired) for `name` of type `qtype` (1: A, 28: AAAA), class IN."""
    qname = b''.join(bytes([len(label)]) + label.encode() for label in name.split('.')) + b'\0'
    return struct.pack('!HHHHHH', ident, 0x0100, 1, 0, 0, 0) + qname + struct.pack('!HH', qtype, 1)


def dns_tcp(name):
    query = dns_query(7, name, 1)
    s = socket.create_connection((GATEWAY, 53), timeout=10)
    s.sendall(struct.pack('!H', len(query)) + query)
    length = struct.unpack('!H', s.recv(2))[0]
    reply = b''
    while len(reply) < length:
        reply += s.recv(length - len(reply))
    rcode = struct.unpack('!H', reply[2:4])[0] & 0xf
    answers = struct.unpack('!H', reply[6:8])[0]
    print(rcode, socket.inet_ntoa(reply[-4:]) if answers else '-')


def dns_burst(count, *names):
    """Sends `count` UDP queries (A and AAAA for each of `names` in turn) before reading any answer, as a parallel
    build's resolvers do; prints how many got an answer within 5 seconds and their response codes."""
    count = int(count)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.connect((GATEWAY, 53))
    answered = {}

    def receive():
        s.settimeout(5)
        try:
            while len(answered) < count:
                reply = s.recv(512)
                answered[struct.unpack('!H', reply[:2])[0]] = struct.unpack('!H', reply[2:4])[0] & 0xf
        except socket.timeout:
            pass

    reader = threading.Thread(target=receive)
    reader.start()
    for i in range(count):
        s.send(dns_query(i, names[(i // 2) % len(names)], 1 if i % 2 == 0 else 28))
    reader.join()
    print(len(answered), sorted(set(answered.values())))


def fuzz(seconds):
    rnd = random.Random(5)
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM)
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = 0
    end = time.time() + float(seconds)
    sandbox, gateway = socket.inet_aton('198.18.0.2'), socket.inet_aton(GATEWAY)
    while time.time() < end:
        kind = rnd.randrange(4)
        if kind == 0:
            pkt = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 120)))
        else:
            # A plausible IPv4 header from the sandbox with random fields and a random payload.
            proto = rnd.choice([1, 6, 17, 47, rnd.randrange(256)])
            payload = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 80)))
            if proto in (6, 17) and rnd.random() < 0.5:
                # Aim at the gateway's DNS port with random ports, lengths, flags and checksums.
                payload = struct.pack('!HHH', rnd.randrange(65536), 53, rnd.randrange(65536)) + payload
            total = 20 + len(payload) if rnd.random() < 0.8 else rnd.randrange(65536)
            dst = gateway if rnd.random() < 0.7 else socket.inet_aton('198.19.%d.%d' % (rnd.randrange(256), rnd.randrange(256)))
            header = struct.pack('!BBHHHBBH4s4s', 0x45, 0, total, 0, rnd.choice([0, 0x4000, 0x4000, 0x2000, 0x1fff]), 64, proto, 0, sandbox, dst)
            if rnd.random() < 0.7:
                # A valid header checksum, so the packet gets past the first check.
                words = sum(struct.unpack('!10H', header))
                words = (words & 0xffff) + (words >> 16)
                words = (words & 0xffff) + (words >> 16)
                header = header[:10] + struct.pack('!H', ~words & 0xffff) + header[12:]
            pkt = header + payload
        raw.sendto(pkt, ('airlock0', 0x0800))
        dns.sendto(bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 60))), (GATEWAY, 53))
        sent += 2
    print(sent)


if __name__ == '__main__':
    globals()[sys.argv[1].replace('-', '_')](*sys.argv[2:])
