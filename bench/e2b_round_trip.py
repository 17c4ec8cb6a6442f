"""bench/e2b: the unmodified E2B Python SDK (e2b 2.x) against `airlock serve --e2b`, on loopback.

Measures the round trip an E2B user's code makes for one short task:
    Sandbox.create()  ->  sandbox.commands.run("echo hi")  ->  sandbox.kill()
cold (a new sandbox set up for the create) and from a warm pool (the daemon keeps POOL sandboxes ready;
`Sandbox.create(template=POOL_NAME)` takes one), and reports the median and p90 of the whole round trip and of
each of its three calls. E2B's own published sandbox start is about 150 ms (a Firecracker microVM); the SDK's
calls are the same here, only the server differs.

A benchmark, not a test: exit 0 when it measured (whether or not the pool could be used: a daemon that does not
know pools as templates prints why); 1 when it could not measure (not root, no binary, the daemon did not
start).

Environment: RUNS (default 50), POOL (pool size, default 4), AIRLOCK (the binary; default
target/<host-triple>/release/airlock, built when missing).
"""

import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

RUNS = int(os.environ.get("RUNS", "50"))
POOL = int(os.environ.get("POOL", "4"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POOL_NAME = "e2bbench"


def say(*args):
    print(*args, flush=True)


def airlock_binary():
    if os.environ.get("AIRLOCK"):
        return os.environ["AIRLOCK"]
    triple = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout
    host = next(line.split(": ", 1)[1] for line in triple.splitlines() if line.startswith("host: "))
    path = os.path.join(ROOT, "target", host, "release", "airlock")
    if not os.path.exists(path):
        say("building the release binary ...")
        subprocess.run(["cargo", "build", "--release", "--locked", "-q", "-p", "airlock"], cwd=ROOT, check=True)
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=120)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(120)
        s.connect(self.unix_path)
        self.sock = s


def rest(sock, method, path, body=None):
    conn = UnixConnection(sock)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    text = resp.read()
    conn.close()
    return resp.status, (json.loads(text) if text else None)


def stats(label, xs):
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]
    say(f"{label:<34} p50 {statistics.median(xs):8.2f} ms   p90 {p90:8.2f} ms   "
        f"min {xs[0]:8.2f} ms   n={len(xs)}")
    return statistics.median(xs)


def round_trips(Sandbox, runs, template):
    total, create, run, kill = [], [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        sbx = Sandbox.create(template=template) if template else Sandbox.create()
        t1 = time.perf_counter()
        result = sbx.commands.run("echo hi")
        t2 = time.perf_counter()
        sbx.kill()
        t3 = time.perf_counter()
        if result.stdout != "hi\n":
            raise RuntimeError(f"unexpected output {result.stdout!r}")
        total.append((t3 - t0) * 1000)
        create.append((t1 - t0) * 1000)
        run.append((t2 - t1) * 1000)
        kill.append((t3 - t2) * 1000)
    return total, create, run, kill


def main():
    if os.geteuid() != 0:
        say("bench/e2b: run as root (sandboxes are created)")
        return 1
    binary = airlock_binary()
    work = tempfile.mkdtemp(prefix="airlock-bench-e2b.")
    sock = os.path.join(work, "airlock.sock")
    port = free_port()
    log = open(os.path.join(work, "serve.log"), "w")
    env = {k: v for k, v in os.environ.items() if k != "AIRLOCK_HOST"}
    daemon = subprocess.Popen(
        [binary, "serve", "--socket", sock, "--e2b", f"127.0.0.1:{port}", "--state-dir",
         os.path.join(work, "state")],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.02)
        url = f"http://127.0.0.1:{port}"
        os.environ.update(E2B_API_URL=url, E2B_SANDBOX_URL=url, E2B_API_KEY="bench")
        os.environ.pop("E2B_DOMAIN", None)
        from importlib.metadata import version

        from e2b import Sandbox  # after the environment is set: the SDK reads it
        sdk_version = version("e2b")

        say(f"bench/e2b: e2b {sdk_version} SDK against airlock serve --e2b 127.0.0.1:{port}; {RUNS} round trips "
            f"each; {os.cpu_count()} CPUs")
        round_trips(Sandbox, 3, None)  # warm-up: page cache, the SDK's connection pool
        total, create, run, kill = round_trips(Sandbox, RUNS, None)
        say("cold (a new sandbox per create):")
        cold = stats("  create -> run(echo hi) -> kill", total)
        stats("  Sandbox.create()", create)
        stats("  commands.run('echo hi')", run)
        stats("  kill()", kill)

        status, body = rest(sock, "POST", "/v1/pools", {"name": POOL_NAME, "size": POOL, "sandbox": {}})
        pooled = None
        if status != 201:
            say(f"pool: POST /v1/pools answered {status} {body}: not measured")
        else:
            # Fills in the background; each take is refilled, so keep the pace under the refill rate by waiting
            # for a full pool before every round trip (what is measured is a take, not a refill).
            def pool_full():
                s, b = rest(sock, "GET", "/v1/pools")
                pools = (b or {}).get("pools", [])
                return any(p.get("name") == POOL_NAME and p.get("ready", 0) >= POOL for p in pools)

            totals, creates, runs_, kills = [], [], [], []
            try:
                for _ in range(RUNS):
                    deadline = time.monotonic() + 60
                    while not pool_full() and time.monotonic() < deadline:
                        time.sleep(0.01)
                    t, c, r, k = round_trips(Sandbox, 1, POOL_NAME)
                    totals += t
                    creates += c
                    runs_ += r
                    kills += k
            except Exception as e:  # noqa: BLE001 (a benchmark reports what it could not measure)
                say(f"pool: Sandbox.create(template={POOL_NAME!r}) failed: {type(e).__name__}: {e}")
            if totals:
                say(f"from a warm pool of {POOL}:")
                pooled = stats("  create -> run(echo hi) -> kill", totals)
                stats("  Sandbox.create(template=pool)", creates)
                stats("  commands.run('echo hi')", runs_)
                stats("  kill()", kills)
        say("E2B's published sandbox start: ~150 ms (create alone, a Firecracker microVM, not measured here)")
        say(f"median round trip: cold {cold:.1f} ms" + (f", pooled {pooled:.1f} ms" if pooled else ""))
        return 0
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        for name in os.listdir(os.path.join(work, "state", "sandboxes")) if os.path.isdir(
                os.path.join(work, "state", "sandboxes")) else []:
            subprocess.run([binary, "stop", "--", name], env={**env, "AIRLOCK_STATE_DIR": os.path.join(work, "state")},
                           capture_output=True)
            subprocess.run([binary, "rm", "--", name], env={**env, "AIRLOCK_STATE_DIR": os.path.join(work, "state")},
                           capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
