"""A real ``airlock serve`` for the tests: the binary named by ``AIRLOCK``, run as root with its own state
directory, on a Unix socket and on a loopback TCP port with a token. At the end the daemon is stopped and every
sandbox it left is stopped and removed."""

from __future__ import annotations

import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Daemon:
    binary: str
    dir: Path
    socket: Path
    state: Path
    process: subprocess.Popen[bytes]
    tcp: str | None = None
    token: str | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def log(self) -> str:
        return (self.dir / "serve.log").read_text(errors="replace")

    def airlock(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``airlock ARGS`` on the daemon's state directory, as the CLI."""
        env = {k: v for k, v in os.environ.items() if k != "AIRLOCK_HOST"}
        env["AIRLOCK_STATE_DIR"] = str(self.state)
        return subprocess.run([self.binary, *args], env=env, capture_output=True, text=True, check=False)

    def stop(self) -> None:
        """Stops the daemon, then stops and removes every sandbox it left (running, kept or pooled)."""
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        sandboxes = self.state / "sandboxes"
        if sandboxes.is_dir():
            for entry in sandboxes.iterdir():
                self.airlock("stop", "--", entry.name)
                self.airlock("rm", "--", entry.name)
        shutil.rmtree(self.dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_daemon(*extra: str, tcp: bool = False) -> Daemon:
    binary = os.environ.get("AIRLOCK")
    if not binary or not os.access(binary, os.X_OK):
        pytest.fail("set AIRLOCK to the airlock binary (scripts/sdk-test does)")
    if os.geteuid() != 0:
        pytest.fail("the SDK's tests run airlock serve as root")
    workdir = Path(tempfile.mkdtemp(prefix="airlock-sdk-test."))
    os.chmod(workdir, 0o755)
    sock, state = workdir / "airlock.sock", workdir / "state"
    args = [binary, "serve", "--socket", str(sock), "--state-dir", str(state), *extra]
    address = token = None
    if tcp:
        token = secrets.token_hex(24)
        (workdir / "token").write_text(token + "\n")
        address = f"127.0.0.1:{_free_port()}"
        args += ["--listen", address, "--token-file", str(workdir / "token")]
    env = {k: v for k, v in os.environ.items() if k != "AIRLOCK_HOST"}
    with open(workdir / "serve.log", "ab") as log:
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
    daemon = Daemon(binary, workdir, sock, state, process, f"http://{address}" if address else None, token)
    deadline = time.monotonic() + 20
    while not _answers(sock):
        if process.poll() is not None or time.monotonic() > deadline:
            daemon.stop()
            pytest.fail(f"airlock serve did not start: {daemon.log()}")
        time.sleep(0.02)
    return daemon


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    """The daemon most tests share: socket and TCP (with a token)."""
    d = start_daemon("--max-sandboxes", "32", tcp=True)
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def host(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> str:
    """The shared daemon's socket URL; AIRLOCK_HOST and AIRLOCK_TOKEN are unset so nothing else is used."""
    monkeypatch.delenv("AIRLOCK_HOST", raising=False)
    monkeypatch.delenv("AIRLOCK_TOKEN", raising=False)
    return daemon.host


_names = itertools.count()


@pytest.fixture
def unique() -> Iterator[str]:
    """A sandbox or pool name no other test uses."""
    yield f"sdk-{os.getpid()}-{next(_names)}"


@pytest.fixture
def workspace() -> Iterator[Path]:
    """A host directory for a copy-on-write workspace, holding ``a.txt``. As host root, the sandbox's root maps
    to the workspace's owner: an ordinary user (nobody), as for a real project directory."""
    nobody = pwd.getpwnam("nobody")
    path = Path(tempfile.mkdtemp(prefix="airlock-sdk-ws."))
    (path / "a.txt").write_text("original\n")
    for p in (path, path / "a.txt"):
        os.chown(p, nobody.pw_uid, nobody.pw_gid)
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
