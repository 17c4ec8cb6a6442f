"""The blocking SDK against a real daemon: every method, the errors, files in binary, streaming."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

import airlock
from airlock import (
    AirlockError,
    BadRequest,
    Client,
    Conflict,
    ConnectionFailed,
    ExecExit,
    ExecStarted,
    ExecStderr,
    ExecStdout,
    NotFound,
    Sandbox,
)


def test_health(host: str) -> None:
    with Client(host) as client:
        health = client.health()
    assert health.version
    assert health.sandboxes >= 0


def test_create_is_a_context_manager_that_deletes(host: str, unique: str) -> None:
    with Sandbox.create(host=host, name=unique, env={"GREETING": "hi"}) as sb:
        assert sb.name == unique
        assert sb.info.state == "running"
        assert sb.info.created is not None
        assert unique in [s.name for s in Sandbox.list(host=host)]
        again = Sandbox.connect(unique, host=host)
        assert again.refresh().state == "running"
        assert again.exec(["sh", "-c", 'echo "$GREETING"']).stdout == "hi\n"
        again.close()
    with pytest.raises(NotFound):
        Sandbox.connect(unique, host=host)
    assert unique not in [s.name for s in Sandbox.list(host=host)]


def test_exec_waits_for_the_result(host: str) -> None:
    with Sandbox.create(host=host) as sb:
        r = sb.exec(["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert (r.exit_code, r.stdout, r.stderr, r.ok) == (3, "out\n", "err\n", False)
        assert r.timed_out is False and r.truncated is False
        assert r.duration_ms >= 0
        # One string is a shell command line.
        r = sb.exec("echo $((6 * 7)) | tr -d '\\n'; pwd", cwd="/tmp", env={"EXTRA": "a\nb"})
        assert r.stdout == "42/tmp\n" and r.ok
        assert sb.exec(["sh", "-c", 'printf %s "$EXTRA"'], env={"EXTRA": "a\nb"}).stdout == "a\nb"
        assert sb.exec(["cat"], stdin="fed through stdin").stdout == "fed through stdin"
        assert sb.exec(["no-such-command-here"]).exit_code == 127
        # Output that is not UTF-8: exact bytes, text with replacement characters.
        r = sb.exec(["printf", "\\377\\376ok"])
        assert r.stdout_bytes == b"\xff\xfeok"
        assert r.stdout == "\ufffd\ufffdok"
        assert r.stderr_bytes == b""


def test_exec_timeout(host: str) -> None:
    with Sandbox.create(host=host) as sb:
        started = time.monotonic()
        r = sb.exec(["sleep", "100"], timeout=0.5)
        assert time.monotonic() - started < 10
        assert (r.exit_code, r.timed_out) == (124, True)
        assert sb.exec(["sleep", "0.1"], timeout="5s").timed_out is False


def test_exec_stream_yields_events_as_they_happen(host: str) -> None:
    with Sandbox.create(host=host) as sb:
        seen: list[tuple[float, airlock.ExecEvent]] = []
        started = time.monotonic()
        with sb.exec_stream(["sh", "-c", "echo one; sleep 1; echo two >&2; printf '\\377'; exit 5"]) as events:
            for event in events:
                seen.append((time.monotonic() - started, event))
        kinds = [e for _, e in seen]
        assert isinstance(kinds[0], ExecStarted) and kinds[0].pid
        assert isinstance(kinds[-1], ExecExit)
        assert (kinds[-1].exit_code, kinds[-1].timed_out) == (5, False)
        stdout = b"".join(e.data for e in kinds if isinstance(e, ExecStdout))
        stderr = b"".join(e.data for e in kinds if isinstance(e, ExecStderr))
        assert (stdout, stderr) == (b"one\n\xff", b"two\n")
        # "one" arrived before the command's end, not all at once at the end.
        first_out = next(t for t, e in seen if isinstance(e, ExecStdout))
        assert seen[-1][0] - first_out > 0.5
        # A timeout in a stream.
        last = list(sb.exec_stream("sleep 100", timeout="300ms"))[-1]
        assert isinstance(last, ExecExit) and last.timed_out and last.exit_code == 124


def test_closing_a_stream_early_kills_nothing(host: str) -> None:
    with Sandbox.create(host=host) as sb:
        stream = sb.exec_stream("echo begun; sleep 1; echo done > /tmp/finished")
        for event in stream:
            if isinstance(event, ExecStdout):
                break
        stream.close()
        deadline = time.monotonic() + 15
        while sb.exec("cat /tmp/finished").stdout != "done\n":
            assert time.monotonic() < deadline, "the command died with its stream"
            time.sleep(0.2)


def test_files_round_trip_bytes(host: str) -> None:
    with Sandbox.create(host=host) as sb:
        every_byte = bytes(range(256)) * 3
        sb.files.write("/tmp/deep/dir/every-byte.bin", every_byte)
        assert sb.files.read("/tmp/deep/dir/every-byte.bin") == every_byte
        big = os.urandom(3 << 20)
        sb.files.write("/tmp/big.bin", big)
        assert sb.files.read("/tmp/big.bin") == big
        assert sb.exec(["wc", "-c", "/tmp/big.bin"]).stdout.split()[0] == str(len(big))
        sb.files.write("/tmp/deep/text.txt", "héllo\n", mode=0o640)
        assert sb.files.read("/tmp/deep/text.txt").decode() == "héllo\n"
        sb.files.write("/tmp/deep/run.sh", "#!/bin/sh\necho ran\n", mode=0o755)
        assert sb.exec(["/tmp/deep/run.sh"]).stdout == "ran\n"
        sb.files.write("/tmp/empty", b"")
        assert sb.files.read("/tmp/empty") == b""

        entries = {e.name: e for e in sb.files.list("/tmp/deep")}
        assert set(entries) == {"dir", "text.txt", "run.sh"}
        assert (entries["dir"].type, entries["text.txt"].type) == ("dir", "file")
        assert (entries["text.txt"].mode, entries["run.sh"].mode) == (0o640, 0o755)
        assert entries["text.txt"].size == len("héllo\n".encode())
        with pytest.raises(IsADirectoryError):
            sb.files.read("/tmp/deep")
        with pytest.raises(NotADirectoryError):
            sb.files.list("/tmp/deep/text.txt")

        sb.files.remove("/tmp/deep/text.txt")
        with pytest.raises(NotFound) as missing:
            sb.files.read("/tmp/deep/text.txt")
        assert (missing.value.code, missing.value.status) == ("not_found", 404)
        sb.files.remove("/tmp/deep")
        with pytest.raises(NotFound):
            sb.files.list("/tmp/deep")
        with pytest.raises(BadRequest):
            sb.files.read("relative/path")
        with pytest.raises(NotFound):
            sb.files.remove("/tmp/never-was")


def test_workspace_diff_checkpoint_rollback_commit_discard(host: str, workspace: Path) -> None:
    with Sandbox.create(host=host, workspace=str(workspace)) as sb:
        assert (sb.info.workspace, sb.info.workspace_mode) == (str(workspace), "cow")
        sb.exec("echo first > b.txt")
        diff = sb.diff()
        assert diff.workspace == str(workspace)
        assert [(c.path, c.kind, c.new_type) for c in diff.changes] == [("b.txt", "added", "file")]
        assert diff.changes[0].size == len("first\n") and diff.changes[0].new_hash

        cp = sb.checkpoint("c1")
        assert (cp.label, cp.changes) == ("c1", 1)
        sb.exec("echo second > b.txt; echo x > c.txt")
        numbered = sb.checkpoint()
        assert numbered.label and numbered.label != "c1"
        assert [c.label for c in sb.checkpoints()] == ["c1", numbered.label]
        sb.rollback("c1")
        with pytest.raises(NotFound):
            sb.rollback("never-made")
        assert sb.exec("cat b.txt; test -e c.txt || echo no-c").stdout == "first\nno-c\n"
        assert not (workspace / "b.txt").exists(), "the host changed before a commit"

        assert sb.commit() == 1
        assert (workspace / "b.txt").read_text() == "first\n"
        assert sb.diff().changes == []

        # A host file changed since the sandbox started: the commit is refused, naming it; force overwrites.
        sb.exec("echo from-the-sandbox > a.txt; echo y > d.txt")
        (workspace / "a.txt").write_text("changed on the host\n")
        with pytest.raises(Conflict) as refused:
            sb.commit()
        assert refused.value.status == 409
        assert refused.value.details["conflicts"] == ["a.txt"]
        assert sb.commit(["d.txt"]) == 1
        assert (workspace / "d.txt").read_text() == "y\n"
        assert sb.commit(force=True) == 1
        assert (workspace / "a.txt").read_text() == "from-the-sandbox\n"

        sb.exec("echo scratch > e.txt; echo keep > f.txt")
        assert sb.discard(["e.txt"]) == 1
        assert [c.path for c in sb.diff().changes] == ["f.txt"]
        assert sb.discard() == 1
        assert sb.exec("ls").stdout.split() == ["a.txt", "b.txt", "d.txt"]


def test_logs_and_following_them(host: str, unique: str) -> None:
    with Sandbox.create(host=host) as sb:
        sb.exec(["echo", "a-logged-command"])
        records = sb.logs()
        assert records[0]["kind"] == "created"
        assert any(r.get("command") == ["echo", "a-logged-command"] for r in records)
        assert all(r["sandbox"] == sb.name for r in records)

        marker = f"marker-{unique}"
        writer = threading.Timer(0.5, lambda: sb.exec(["echo", marker]))
        with sb.follow_logs() as follow:
            writer.start()
            seen = any(marker in str(record) for record in follow)
        writer.join()
        assert seen


def test_stats_need_limits(host: str) -> None:
    with Sandbox.create(host=host) as plain:
        with pytest.raises(Conflict, match="no resource limits"):
            plain.stats()
    with Sandbox.create(host=host, memory="128M", pids=64) as limited:
        stats = limited.stats()
        assert stats["memory"]["limit_bytes"] == 128 << 20
        assert stats["pids"]["limit"] == 64
        assert stats["name"] == limited.name


def test_lifetime_stop_and_delete(host: str, daemon: object) -> None:
    sb = Sandbox.create(host=host, timeout=3600)
    try:
        assert sb.info.expires_at is not None
        assert 3500 < sb.info.expires_at - time.time() < 3700
        info = sb.set_timeout("2h")
        assert 7100 < (info.expires_at or 0) - time.time() < 7300
        assert sb.set_timeout(90.5).spec["timeout"] == "90500ms"

        sb.exec("echo kept > /tmp/f")
        sb.stop()
        assert sb.refresh().state == "exited"
        assert sb.name in [s.name for s in Sandbox.list(host=host)]
        with pytest.raises(Conflict, match="not running"):
            sb.exec("true")
        sb.delete()
        with pytest.raises(NotFound):
            sb.refresh()
        sb.kill()  # already gone: not an error
    finally:
        sb.kill()
        sb.close()


def test_a_lifetime_that_runs_out_stops_the_sandbox(host: str) -> None:
    with Client(host) as client:
        sb = Sandbox.create(client=client, timeout="1s")
        deadline = time.monotonic() + 30
        while sb.refresh().state != "exited":
            assert time.monotonic() < deadline, "the lifetime never ran out"
            time.sleep(0.2)
        assert sb.name in [s.name for s in Sandbox.list(client=client)], "stopped, not removed"
        # The daemon's own stop may still hold the sandbox for a moment after its init is gone (a delete then is
        # a 409, "being deleted already").
        while True:
            try:
                sb.delete()
                break
            except Conflict:
                assert time.monotonic() < deadline, "the sandbox stayed busy"
                time.sleep(0.1)


def test_errors_are_classes_per_code(host: str, unique: str) -> None:
    with pytest.raises(NotFound) as e:
        Sandbox.connect("no-such-sandbox", host=host)
    assert isinstance(e.value, AirlockError)
    assert (e.value.code, e.value.status) == ("not_found", 404)
    assert "no sandbox named no-such-sandbox" in e.value.message

    with pytest.raises(BadRequest) as bad:
        Sandbox.create(host=host, workspace="relative/path")
    assert (bad.value.code, bad.value.status) == ("bad_request", 400)
    assert "workspace" in bad.value.message
    with pytest.raises(BadRequest):
        Sandbox.create(host=host, net="everywhere")  # type: ignore[typeddict-item]
    with pytest.raises(BadRequest):
        Sandbox.create(host=host, timeout="soon")

    with Client(host) as client, Sandbox.create(client=client, name=unique) as sb:
        with pytest.raises(Conflict) as dup:
            Sandbox.create(host=host, name=unique)
        assert (dup.value.code, dup.value.status) == ("conflict", 409)
        assert "exists already" in dup.value.message
        with pytest.raises(BadRequest, match="no copy-on-write workspace"):
            sb.rollback("c1")
        with pytest.raises(BadRequest):
            sb.checkpoint("-not a label")
        with pytest.raises(BadRequest):
            sb.exec([])
        with pytest.raises(BadRequest):
            sb.exec(["true"], cwd="relative")
        sb.kill()
        # A sandbox that is gone: 404 from every method.
        with pytest.raises(NotFound):
            sb.exec("true")
        with pytest.raises(NotFound):
            sb.files.read("/etc/hostname")
        with pytest.raises(NotFound):
            sb.diff()
        with pytest.raises(NotFound):
            sb.logs()
        with pytest.raises(NotFound):
            sb.delete()


def test_setup_failed(host: str) -> None:
    with pytest.raises(airlock.SetupFailed) as e:
        Sandbox.create(host=host, cpus=1024)
    assert (e.value.code, e.value.status) == ("setup_failed", 422)
    assert "more than this host has" in e.value.message


def test_host_comes_from_the_environment_unless_given(
    host: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AIRLOCK_HOST", host)
    with Client() as client:
        assert client.endpoint.url == host
        assert client.health().version
    nowhere = f"unix://{tmp_path}/no-daemon.sock"
    monkeypatch.setenv("AIRLOCK_HOST", nowhere)
    with pytest.raises(ConnectionFailed) as e:
        Sandbox.list()
    assert e.value.status is None
    assert isinstance(Sandbox.list(host=host), list)
    with pytest.raises(ValueError):
        Client("ftp://example")
    with pytest.raises(ValueError):
        Client("unix://relative.sock")
