"""Pools, TCP with a token, and the daemon's limits, through the blocking SDK."""

from __future__ import annotations

import time

import pytest
from conftest import Daemon, start_daemon

from airlock import BadRequest, Client, Conflict, LimitExceeded, NotFound, Pool, Sandbox, Unauthorized


def wait_until_ready(name: str, host: str, count: int) -> Pool:
    deadline = time.monotonic() + 60
    while True:
        pool = next(p for p in Pool.list(host=host) if p.name == name)
        if pool.ready >= count:
            return pool
        assert time.monotonic() < deadline, f"pool {name} never had {count} ready: {pool}"
        time.sleep(0.1)


def test_pools(host: str, unique: str) -> None:
    pool = Pool.create(unique, 1, {"memory": "64M", "env": {"FROM_POOL": "yes"}}, host=host)
    try:
        assert (pool.name, pool.size) == (unique, 1)
        assert pool.spec["memory"] == "64M"
        wait_until_ready(unique, host, 1)
        with pytest.raises(Conflict):
            Pool.create(unique, 1, host=host)

        with Sandbox.create(host=host, pool=unique, timeout="10m") as sb:
            assert sb.info.state == "running"
            assert sb.info.expires_at is not None and 500 < sb.info.expires_at - time.time() < 700
            assert sb.exec('printf %s "$FROM_POOL"').stdout == "yes"
            assert sb.stats()["memory"]["limit_bytes"] == 64 << 20
            assert sb.name in [s.name for s in Sandbox.list(host=host)]
        # Taken: the daemon refills it.
        wait_until_ready(unique, host, 1)
        # The pool's spec says everything but the lifetime.
        with pytest.raises(BadRequest):
            Sandbox.create(host=host, pool=unique, memory="1G")
        with pytest.raises(BadRequest):
            Pool.create(f"{unique}-big", 65, host=host)
        with pytest.raises(BadRequest):
            Pool.create(f"{unique}-named", 1, {"name": "x"}, host=host)
    finally:
        pool.delete()
    assert unique not in [p.name for p in Pool.list(host=host)]
    with pytest.raises(NotFound):
        pool.delete()
    with pytest.raises(NotFound):
        Sandbox.create(host=host, pool=unique)


def test_pool_through_a_shared_client(host: str, unique: str) -> None:
    with Client(host) as client:
        pool = Pool.create(unique, 0, client=client)
        assert pool.ready == 0
        # An empty pool: a create from it is a cold create of its spec.
        with Sandbox.create(client=client, pool=unique) as sb:
            assert sb.exec("true").ok
        pool.delete()
        assert unique not in [p.name for p in Pool.list(client=client)]


def test_tcp_needs_the_token(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    assert daemon.tcp and daemon.token
    monkeypatch.delenv("AIRLOCK_HOST", raising=False)
    monkeypatch.delenv("AIRLOCK_TOKEN", raising=False)
    before = len(Sandbox.list(host=daemon.host))

    with pytest.raises(Unauthorized) as wrong:
        Sandbox.create(host=daemon.tcp, token="not-the-token-at-all")
    assert (wrong.value.code, wrong.value.status) == ("unauthorized", 401)
    with pytest.raises(Unauthorized):
        Client(daemon.tcp).health()
    with pytest.raises(Unauthorized):
        Sandbox.list(host=daemon.tcp)
    assert len(Sandbox.list(host=daemon.host)) == before, "a refused request created something"

    with Sandbox.create(host=daemon.tcp, token=daemon.token) as sb:
        assert sb.exec(["echo", "over tcp"]).stdout == "over tcp\n"
        sb.files.write("/tmp/t.bin", b"\x00\x01\xff")
        assert sb.files.read("/tmp/t.bin") == b"\x00\x01\xff"
        events = list(sb.exec_stream(["echo", "streamed"]))
        assert events[-1].type == "exit"

    # From the environment.
    monkeypatch.setenv("AIRLOCK_HOST", daemon.tcp)
    monkeypatch.setenv("AIRLOCK_TOKEN", daemon.token)
    with Client() as client:
        assert client.health().version
    # An explicit token wins over the environment's.
    with pytest.raises(Unauthorized):
        Client(token="not-the-token-at-all").health()


def test_a_token_goes_in_the_clear_only_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRLOCK_TOKEN_INSECURE", raising=False)
    with pytest.raises(ValueError, match="in the clear"):
        Client("http://192.0.2.1:7777", token="t" * 32)
    # Said so explicitly: allowed (nothing is sent until a request).
    monkeypatch.setenv("AIRLOCK_TOKEN_INSECURE", "1")
    Client("http://192.0.2.1:7777", token="t" * 32).close()
    # Loopback, and TLS, need no say-so.
    monkeypatch.delenv("AIRLOCK_TOKEN_INSECURE")
    Client("http://127.0.0.1:7777", token="t" * 32).close()
    Client("http://[::1]:7777", token="t" * 32).close()
    Client("https://192.0.2.1:7777", token="t" * 32).close()


def test_limits_are_limit_exceeded() -> None:
    small = start_daemon("--max-sandboxes", "1")
    try:
        with Sandbox.create(host=small.host):
            with pytest.raises(LimitExceeded) as e:
                Sandbox.create(host=small.host)
            assert (e.value.code, e.value.status) == ("limit", 429)
    finally:
        small.stop()
