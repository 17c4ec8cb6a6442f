"""The asyncio SDK against a real daemon: the same methods as the blocking one, awaited, and concurrent use."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from conftest import Daemon, start_daemon

from airlock import (
    AsyncClient,
    AsyncPool,
    AsyncSandbox,
    BadRequest,
    Conflict,
    ConnectionFailed,
    ExecExit,
    ExecStarted,
    ExecStderr,
    ExecStdout,
    LimitExceeded,
    NotFound,
    Unauthorized,
)

pytestmark = pytest.mark.anyio


async def test_health_and_a_sandbox_in_async_with(host: str, unique: str) -> None:
    async with AsyncClient(host) as client:
        assert (await client.health()).version
    async with AsyncSandbox.create(host=host, name=unique, env={"GREETING": "hi"}) as sb:
        assert (sb.name, sb.info.state) == (unique, "running")
        assert unique in [s.name for s in await AsyncSandbox.list(host=host)]
        other = await AsyncSandbox.connect(unique, host=host)
        assert (await other.refresh()).state == "running"
        await other.aclose()
        r = await sb.exec(["sh", "-c", 'echo "$GREETING"; echo err >&2; exit 4'])
        assert (r.exit_code, r.stdout, r.stderr) == (4, "hi\n", "err\n")
        assert (await sb.exec("pwd", cwd="/tmp")).stdout == "/tmp\n"
        assert (await sb.exec(["cat"], stdin="in")).stdout == "in"
        assert (await sb.exec(["printf", "\\377"])).stdout_bytes == b"\xff"
        r = await sb.exec("sleep 100", timeout="300ms")
        assert (r.exit_code, r.timed_out) == (124, True)
    with pytest.raises(NotFound):
        await AsyncSandbox.connect(unique, host=host)


async def test_awaited_create_and_delete(host: str) -> None:
    sb = await AsyncSandbox.create(host=host, timeout=600)
    try:
        assert sb.info.expires_at is not None and 500 < sb.info.expires_at - time.time() < 700
        info = await sb.set_timeout("1h")
        assert 3500 < (info.expires_at or 0) - time.time() < 3700
        await sb.stop()
        assert (await sb.refresh()).state == "exited"
        with pytest.raises(Conflict):
            await sb.exec("true")
        await sb.delete()
        with pytest.raises(NotFound):
            await sb.refresh()
    finally:
        await sb.kill()
        await sb.aclose()


async def test_exec_stream(host: str) -> None:
    async with AsyncSandbox.create(host=host) as sb:
        events = [e async for e in sb.exec_stream(["sh", "-c", "echo one; sleep 0.3; echo two >&2; exit 5"])]
        assert isinstance(events[0], ExecStarted)
        assert [e.text for e in events if isinstance(e, ExecStdout)] == ["one\n"]
        assert [e.text for e in events if isinstance(e, ExecStderr)] == ["two\n"]
        last = events[-1]
        assert isinstance(last, ExecExit) and last.exit_code == 5
        # In an async with, the request goes at the start: an error comes there.
        async with sb.exec_stream("printf '\\376'") as stream:
            data = b"".join([e.data async for e in stream if isinstance(e, ExecStdout)])
        assert data == b"\xfe"
        with pytest.raises(BadRequest):
            async with sb.exec_stream([]):
                pass


async def test_files(host: str) -> None:
    async with AsyncSandbox.create(host=host) as sb:
        blob = os.urandom(1 << 20) + bytes(range(256))
        await sb.files.write("/tmp/a/b/blob.bin", blob, mode=0o600)
        assert await sb.files.read("/tmp/a/b/blob.bin") == blob
        await sb.files.write("/tmp/a/note.txt", "ünïcode")
        assert (await sb.files.read("/tmp/a/note.txt")).decode() == "ünïcode"
        entries = {e.name: e for e in await sb.files.list("/tmp/a")}
        assert (entries["b"].type, entries["note.txt"].type) == ("dir", "file")
        assert entries["note.txt"].mode == 0o644
        with pytest.raises(IsADirectoryError):
            await sb.files.read("/tmp/a")
        with pytest.raises(NotADirectoryError):
            await sb.files.list("/tmp/a/note.txt")
        await sb.files.remove("/tmp/a")
        with pytest.raises(NotFound):
            await sb.files.read("/tmp/a/note.txt")
        with pytest.raises(BadRequest):
            await sb.files.write("no-slash", b"x")


async def test_workspace(host: str, workspace: Path) -> None:
    async with AsyncSandbox.create(host=host, workspace=str(workspace)) as sb:
        await sb.exec("echo new > b.txt")
        assert [c.path for c in (await sb.diff()).changes] == ["b.txt"]
        assert (await sb.checkpoint("before")).label == "before"
        await sb.exec("rm a.txt")
        assert {(c.path, c.kind) for c in (await sb.diff()).changes} == {("a.txt", "deleted"), ("b.txt", "added")}
        assert [c.label for c in await sb.checkpoints()] == ["before"]
        await sb.rollback("before")
        assert (await sb.exec("cat a.txt")).stdout == "original\n"
        with pytest.raises(NotFound):
            await sb.rollback("never-made")
        (workspace / "b.txt").write_text("the host's\n")
        with pytest.raises(Conflict) as refused:
            await sb.commit()
        assert refused.value.details["conflicts"] == ["b.txt"]
        assert await sb.commit(force=True) == 1
        assert (workspace / "b.txt").read_text() == "new\n"
        await sb.exec("echo scratch > c.txt")
        assert await sb.discard() == 1
        assert (await sb.diff()).changes == []


async def test_logs_stats_and_errors(host: str, unique: str) -> None:
    async with AsyncSandbox.create(host=host, name=unique, pids=32) as sb:
        await sb.exec(["echo", "logged"])
        records = await sb.logs()
        assert any(r.get("command") == ["echo", "logged"] for r in records)
        marker = f"async-marker-{unique}"

        async def later() -> None:
            await asyncio.sleep(0.5)
            await sb.exec(["echo", marker])

        writer = asyncio.create_task(later())
        async with sb.follow_logs() as follow:
            async for record in follow:
                if marker in str(record):
                    break
        await writer
        assert (await sb.stats())["pids"]["limit"] == 32

        with pytest.raises(Conflict):
            await AsyncSandbox.create(host=host, name=unique)
    with pytest.raises(NotFound) as e:
        await AsyncSandbox.connect("no-such-sandbox", host=host)
    assert e.value.status == 404
    with pytest.raises(BadRequest):
        await AsyncSandbox.create(host=host, workspace="relative")


async def test_concurrent_execs_and_sandboxes(host: str) -> None:
    async with AsyncClient(host) as client:
        sandboxes = await asyncio.gather(*(AsyncSandbox.create(client=client) for _ in range(3)))
        try:
            started = time.monotonic()
            results = await asyncio.gather(
                *(sb.exec(["sh", "-c", f"sleep 1; echo {i}"]) for i, sb in enumerate(sandboxes) for _ in range(2))
            )
            # Six one-second commands at once, not one after another.
            assert time.monotonic() - started < 5
            assert sorted(r.stdout for r in results) == ["0\n", "0\n", "1\n", "1\n", "2\n", "2\n"]
        finally:
            await asyncio.gather(*(sb.kill() for sb in sandboxes))


async def test_pools(host: str, unique: str) -> None:
    pool = await AsyncPool.create(unique, 1, {"pids": 50}, host=host)
    try:
        deadline = time.monotonic() + 60
        while next(p for p in await AsyncPool.list(host=host) if p.name == unique).ready < 1:
            assert time.monotonic() < deadline, "the pool was never filled"
            await asyncio.sleep(0.1)
        async with AsyncSandbox.create(host=host, pool=unique) as sb:
            assert (await sb.stats())["pids"]["limit"] == 50
    finally:
        await pool.delete()
    with pytest.raises(NotFound):
        await AsyncSandbox.create(host=host, pool=unique)


async def test_tcp_and_unreachable(daemon: Daemon, tmp_path: Path) -> None:
    assert daemon.tcp
    with pytest.raises(Unauthorized):
        await AsyncSandbox.list(host=daemon.tcp, token="not-the-token-at-all")
    async with AsyncSandbox.create(host=daemon.tcp, token=daemon.token) as sb:
        assert (await sb.exec("echo tcp")).stdout == "tcp\n"
    with pytest.raises(ConnectionFailed):
        await AsyncSandbox.list(host=f"unix://{tmp_path}/nothing.sock")


async def test_limits_are_limit_exceeded() -> None:
    small = start_daemon("--max-sandboxes", "1")
    try:
        async with AsyncSandbox.create(host=small.host):
            with pytest.raises(LimitExceeded):
                await AsyncSandbox.create(host=small.host)
    finally:
        small.stop()
