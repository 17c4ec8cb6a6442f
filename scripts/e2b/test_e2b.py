"""The unmodified E2B Python SDK (e2b==2.63.0, pinned in scripts/setup-debian) against `airlock serve --e2b`.

One real daemon for the module (its own state directory, a token, 127.0.0.1 on a free port); the SDK reaches it
the way a self-hosted E2B is reached: E2B_API_URL and E2B_SANDBOX_URL both name it, E2B_API_KEY is the token.
Only the SDK's public API is used. Every sandbox is killed by its test; the module checks none is left.
Run by scripts/e2b-test (as root).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "testlib"))
from busybox_image import write_busybox_image  # noqa: E402

AIRLOCK = os.environ["AIRLOCK"]
TOKEN = "airlock-e2b-test-token-0123456789abcdef"
# The daemon's own REST API (its Unix socket) and state directory, set by the `server` fixture: pools are made
# there, as an operator would.
DAEMON = {}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def server():
    work = Path(tempfile.mkdtemp(prefix="airlock-e2b-test."))
    state = work / "state"
    (work / "token").write_text(TOKEN + "\n")
    port = free_port()
    log = open(work / "serve.log", "w")
    daemon = subprocess.Popen(
        [AIRLOCK, "serve", "--e2b", f"127.0.0.1:{port}", "--token-file", str(work / "token"),
         "--socket", str(work / "airlock.sock"), "--state-dir", str(state)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        env={k: v for k, v in os.environ.items() if k != "AIRLOCK_HOST"},
    )

    def listening():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    url = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY", "E2B_DOMAIN", "E2B_DEBUG")}
    try:
        wait_for(listening, "airlock serve --e2b to listen")
        wait_for((work / "airlock.sock").exists, "the daemon's socket")
        DAEMON.update(socket=str(work / "airlock.sock"), state=state)
        os.environ.update(E2B_API_URL=url, E2B_SANDBOX_URL=url, E2B_API_KEY=TOKEN)
        os.environ.pop("E2B_DOMAIN", None)
        os.environ.pop("E2B_DEBUG", None)
        yield url
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        daemon.terminate()
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        left = []
        sandboxes = state / "sandboxes"
        if sandboxes.is_dir():
            env = {k: v for k, v in os.environ.items() if k != "AIRLOCK_HOST"}
            env["AIRLOCK_STATE_DIR"] = str(state)
            for d in sandboxes.iterdir():
                left.append(d.name)
                for sub in ("stop", "rm"):
                    subprocess.run([AIRLOCK, sub, "--", d.name], env=env, capture_output=True)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
        assert not left, f"sandboxes left behind: {left}"


@pytest.fixture
def sbx(server):
    from e2b import Sandbox

    s = Sandbox.create(timeout=300, metadata={"suite": "airlock-e2b"})
    try:
        yield s
    finally:
        s.kill()


def test_commands_run_with_output_env_and_cwd(sbx):
    r = sbx.commands.run("echo out; echo err >&2; echo \"$GREETING\"; pwd", envs={"GREETING": "hi there"}, cwd="/tmp")
    assert r.exit_code == 0
    assert r.stdout == "out\nhi there\n/tmp\n"
    assert r.stderr == "err\n"
    chunks = []
    sbx.commands.run("printf 'a\\n'; printf 'b\\n'", on_stdout=chunks.append)
    assert "".join(chunks) == "a\nb\n"


def test_commands_run_as_the_user_asked(sbx):
    assert sbx.commands.run("id -u").stdout == "0\n"  # the sandbox's own user: root inside, nobody outside
    assert sbx.commands.run("id -u", user="root").stdout == "0\n"
    assert sbx.commands.run("id -u; id -g", user="user").stdout == "1000\n1000\n"  # E2B's unprivileged account
    assert sbx.commands.run("touch /tmp/by-user && stat -c %u /tmp/by-user", user="user").stdout == "1000\n"


def test_a_nonzero_exit_raises_with_its_output(sbx):
    from e2b import CommandExitException

    with pytest.raises(CommandExitException) as info:
        sbx.commands.run("echo partial; echo bad >&2; exit 7")
    assert info.value.exit_code == 7
    assert info.value.stdout == "partial\n"
    assert info.value.stderr == "bad\n"


def test_a_login_shell_runs_the_command(sbx):
    r = sbx.commands.run("shopt -q login_shell && echo login")
    assert r.stdout == "login\n"


def test_a_command_past_its_timeout_raises(sbx):
    from e2b import TimeoutException

    started = time.monotonic()
    with pytest.raises(TimeoutException):
        sbx.commands.run("sleep 60", timeout=1)
    assert time.monotonic() - started < 30
    for p in sbx.commands.list():
        sbx.commands.kill(p.pid)


def test_background_commands_outlive_their_stream_and_can_be_killed(sbx):
    from e2b import CommandExitException

    handle = sbx.commands.run("sleep 120", background=True, timeout=1)
    # The stream's deadline passes; the command must go on.
    time.sleep(2.5)
    assert handle.pid in [p.pid for p in sbx.commands.list()]
    listed = [p for p in sbx.commands.list() if p.pid == handle.pid][0]
    assert listed.cmd == "/bin/bash" and listed.args[-1] == "sleep 120"
    assert sbx.commands.kill(handle.pid) is True
    wait_for(lambda: handle.pid not in [p.pid for p in sbx.commands.list()], "the killed command to end")
    assert sbx.commands.kill(handle.pid) is False
    # A fresh connection to a finished command: not found.
    with pytest.raises(Exception):
        sbx.commands.connect(handle.pid).wait()
    # Waiting on a killed command raises with its non-zero exit.
    h2 = sbx.commands.run("sleep 120", background=True)
    sbx.commands.kill(h2.pid)
    with pytest.raises(CommandExitException):
        h2.wait()


def test_background_output_and_stdin(sbx):
    h = sbx.commands.run("read line; echo got:$line", background=True, stdin=True)
    sbx.commands.send_stdin(h.pid, "hello\n")
    r = h.wait()
    assert r.stdout == "got:hello\n"
    h = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.send_stdin(h.pid, "abc")
    sbx.commands.close_stdin(h.pid)
    assert h.wait().stdout == "abc"


def test_stream_input_sends_chunks_in_order(sbx):
    h = sbx.commands.run("cat", background=True, stdin=True)
    # One client-streamed StreamInput call: the start event, then each chunk as the iterable yields it.
    sbx.commands.stream_input(h.pid, ["one ", b"two ", "three"])
    sbx.commands.stream_input(h.pid, [" and more"])
    sbx.commands.close_stdin(h.pid)
    assert h.wait().stdout == "one two three and more"


def test_stream_input_to_an_unknown_process_is_not_found(sbx):
    from e2b import NotFoundException

    with pytest.raises(NotFoundException):
        sbx.commands.stream_input(999999, ["x"])


def test_stream_input_envelopes_arrive_as_they_are_sent(server, sbx):
    """A raw Connect client stream (what the SDK's stream_input sends): each chunk must reach the command while
    the request body is still open, keepalives are taken, and the answer is a message and the end of stream."""
    import base64
    import json
    import queue
    import struct
    import threading

    h = sbx.commands.run("read line; echo \"got:$line\" > /tmp/first; cat", background=True, stdin=True)
    chunks = queue.Queue()

    def envelope(msg):
        data = json.dumps(msg).encode()
        return struct.pack(">BI", 0, len(data)) + data

    def body():
        yield envelope({"start": {"process": {"pid": h.pid}}})
        while (item := chunks.get()) is not None:
            yield envelope(item)

    headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "X-Access-Token": sbx._envd_access_token,
               "Content-Type": "application/connect+json", "Connect-Protocol-Version": "1"}
    answer = {}

    def call():
        answer["r"] = httpx.post(f"{server}/process.Process/StreamInput", content=body(), headers=headers, timeout=60)

    t = threading.Thread(target=call)
    t.start()
    try:
        chunks.put({"data": {"input": {"stdin": base64.b64encode(b"first\n").decode()}}})
        chunks.put({"keepalive": {}})
        wait_for(lambda: sbx.files.exists("/tmp/first") and sbx.files.read("/tmp/first") == "got:first\n",
                 "the first chunk to reach the command with the body still open")
        chunks.put({"data": {"input": {"stdin": base64.b64encode(b"second").decode()}}})
    finally:
        chunks.put(None)
        t.join(60)
    r = answer["r"]
    assert r.status_code == 200 and r.headers["content-type"] == "application/connect+json"
    flags, n = struct.unpack(">BI", r.content[:5])
    assert flags == 0 and json.loads(r.content[5:5 + n]) == {}
    assert r.content[5 + n] == 2 and json.loads(r.content[10 + n:]) == {}
    sbx.commands.close_stdin(h.pid)
    assert h.wait().stdout == "second"


def test_a_pty_runs_an_interactive_shell_and_resizes(sbx):
    from e2b import CommandExitException, PtySize

    out = bytearray()
    h = sbx.pty.create(PtySize(rows=30, cols=100), timeout=60)
    # Each size is written to a file and awaited through the files API, so the resize cannot race the shell.
    sbx.pty.send_stdin(h.pid, b"stty size > /tmp/size1; echo term=$TERM\n")
    wait_for(lambda: sbx.files.exists("/tmp/size1") and sbx.files.read("/tmp/size1"), "the first stty")
    sbx.pty.resize(h.pid, PtySize(rows=40, cols=120))
    sbx.pty.send_stdin(h.pid, b"stty size > /tmp/size2; tty; exit 3\n")
    with pytest.raises(CommandExitException) as info:
        h.wait(on_pty=out.extend)
    assert info.value.exit_code == 3
    assert sbx.files.read("/tmp/size1") == "30 100\n"
    assert sbx.files.read("/tmp/size2") == "40 120\n"
    text = out.decode(errors="replace")
    assert "term=xterm-256color" in text and "/dev/pts/" in text


def test_files_round_trip_text_and_binary(sbx):
    from e2b import FileType, NotFoundException

    sbx.files.write("/tmp/hello.txt", "héllo\n")
    assert sbx.files.read("/tmp/hello.txt") == "héllo\n"
    blob = bytes(range(256)) * 64
    sbx.files.write("/tmp/data/blob.bin", blob)
    assert sbx.files.read("/tmp/data/blob.bin", format="bytes") == bytes(blob)
    # What a command wrote, read back through the files API, and the other way round.
    sbx.commands.run("printf 'from cmd' > /tmp/cmd.txt")
    assert sbx.files.read("/tmp/cmd.txt") == "from cmd"
    assert sbx.commands.run("wc -c < /tmp/data/blob.bin").stdout.strip() == str(len(blob))
    with pytest.raises(NotFoundException):
        sbx.files.read("/tmp/missing.txt")


def test_files_streamed_and_several_at_once(sbx):
    import io

    from e2b.sandbox.filesystem.filesystem import WriteEntry

    # A file-like object goes as an octet-stream upload, several files as one multipart body.
    info = sbx.files.write("/tmp/streamed.bin", io.BytesIO(b"\x00streamed\xff" * 1000))
    assert info.path == "/tmp/streamed.bin"
    assert sbx.files.read("/tmp/streamed.bin", format="bytes") == b"\x00streamed\xff" * 1000
    written = sbx.files.write_files([WriteEntry(path="/tmp/m/one.txt", data="1"), WriteEntry(path="/tmp/m/two.txt", data=b"2")])
    assert sorted(w.path for w in written) == ["/tmp/m/one.txt", "/tmp/m/two.txt"]
    assert sbx.commands.run("cat /tmp/m/one.txt /tmp/m/two.txt").stdout == "12"


def test_files_list_stat_mkdir_rename_remove(sbx):
    from e2b import FileType

    assert sbx.files.make_dir("/tmp/w/sub") is True
    assert sbx.files.make_dir("/tmp/w/sub") is False
    sbx.files.write("/tmp/w/a.txt", "abc")
    entries = {e.name: e for e in sbx.files.list("/tmp/w")}
    assert set(entries) == {"a.txt", "sub"}
    assert entries["a.txt"].type == FileType.FILE and entries["a.txt"].size == 3
    assert entries["sub"].type == FileType.DIR
    assert entries["a.txt"].path == "/tmp/w/a.txt"
    deep = {e.path for e in sbx.files.list("/tmp/w", depth=2)}
    assert "/tmp/w/sub" in deep
    info = sbx.files.get_info("/tmp/w/a.txt")
    assert info.size == 3 and info.permissions.startswith("-")
    assert sbx.files.exists("/tmp/w/a.txt") and not sbx.files.exists("/tmp/w/nope")
    moved = sbx.files.rename("/tmp/w/a.txt", "/tmp/w/sub/b.txt")
    assert moved.path == "/tmp/w/sub/b.txt"
    assert sbx.files.read("/tmp/w/sub/b.txt") == "abc"
    sbx.files.remove("/tmp/w")
    assert not sbx.files.exists("/tmp/w")


def test_watch_dir_reports_changes_between_polls(sbx):
    from e2b import FilesystemEventType

    sbx.files.make_dir("/tmp/watched/sub")
    sbx.files.write("/tmp/watched/old.txt", "1")
    handle = sbx.files.watch_dir("/tmp/watched", recursive=True)
    try:
        assert handle.get_new_events() == []
        sbx.files.write("/tmp/watched/new.txt", "new")
        sbx.files.write("/tmp/watched/sub/deep.txt", "deep")
        sbx.commands.run("printf 'longer' > /tmp/watched/old.txt")
        events = {(e.name, e.type) for e in handle.get_new_events()}
        assert ("new.txt", FilesystemEventType.CREATE) in events
        assert ("sub/deep.txt", FilesystemEventType.CREATE) in events
        assert ("old.txt", FilesystemEventType.WRITE) in events
        sbx.files.remove("/tmp/watched/new.txt")
        assert [(e.name, e.type) for e in handle.get_new_events()] == [("new.txt", FilesystemEventType.REMOVE)]
    finally:
        handle.stop()


def test_the_async_sdk_runs_commands_and_files(server):
    import asyncio

    from e2b import AsyncSandbox, CommandExitException, NotFoundException

    async def main():
        s = await AsyncSandbox.create(timeout=300, metadata={"sdk": "async"}, envs={"FROM_CREATE": "async"})
        try:
            r = await s.commands.run("echo out; echo err >&2; echo $FROM_CREATE $X", envs={"X": "y"}, cwd="/tmp")
            assert (r.exit_code, r.stdout, r.stderr) == (0, "out\nasync y\n", "err\n")
            chunks = []
            await s.commands.run("printf 'a\\n'; printf 'b\\n'", on_stdout=chunks.append)
            assert "".join(chunks) == "a\nb\n"
            try:
                await s.commands.run("exit 4")
            except CommandExitException as e:
                assert e.exit_code == 4
            else:
                raise AssertionError("a non-zero exit did not raise")
            # Several commands at once on one connection.
            outs = await asyncio.gather(*(s.commands.run(f"echo {i}") for i in range(4)))
            assert [o.stdout for o in outs] == [f"{i}\n" for i in range(4)]

            await s.files.write("/tmp/async.txt", "héllo async")
            assert await s.files.read("/tmp/async.txt") == "héllo async"
            blob = bytes(range(256)) * 16
            await s.files.write("/tmp/async.bin", blob)
            assert await s.files.read("/tmp/async.bin", format="bytes") == bytes(blob)
            assert {e.name for e in await s.files.list("/tmp")} >= {"async.txt", "async.bin"}
            try:
                await s.files.read("/tmp/none.txt")
            except NotFoundException:
                pass
            else:
                raise AssertionError("reading a missing file did not raise")

            # Background, the async input handle (one StreamInput call: chunks in order, keepalives), kill.
            h = await s.commands.run("cat", background=True, stdin=True)
            async with s.commands.stream_input(h.pid) as stdin:
                await stdin.send("one ")
                await stdin.send(b"two")
            await s.commands.close_stdin(h.pid)
            assert (await h.wait()).stdout == "one two"
            h = await s.commands.run("sleep 120", background=True)
            assert h.pid in [p.pid for p in await s.commands.list()]
            assert await s.commands.kill(h.pid) is True

            info = await s.get_info()
            assert info.metadata == {"sdk": "async"} and info.template_id == "base"
            same = await AsyncSandbox.connect(s.sandbox_id)
            assert (await same.commands.run("echo again")).stdout == "again\n"
        finally:
            assert await s.kill() is True
        assert await AsyncSandbox.kill(s.sandbox_id) is False

    asyncio.run(main())


def test_async_watch_dir_streams_changes(server):
    import asyncio

    from e2b import AsyncSandbox, FilesystemEventType

    async def main():
        s = await AsyncSandbox.create(timeout=300)
        try:
            await s.files.make_dir("/tmp/w2/sub")
            events, exits = [], []
            handle = await s.files.watch_dir("/tmp/w2", events.append, on_exit=exits.append, recursive=True)
            await s.files.write("/tmp/w2/a.txt", "a")
            await s.files.write("/tmp/w2/sub/b.txt", "b")

            async def seen(name, kind):
                for _ in range(200):
                    if (name, kind) in {(e.name, e.type) for e in events}:
                        return
                    await asyncio.sleep(0.05)
                raise AssertionError(f"no {kind} event for {name}: {events}")

            await seen("a.txt", FilesystemEventType.CREATE)
            await seen("sub/b.txt", FilesystemEventType.CREATE)
            await s.commands.run("printf 'longer' > /tmp/w2/a.txt")
            await seen("a.txt", FilesystemEventType.WRITE)
            await s.files.remove("/tmp/w2/a.txt")
            await seen("a.txt", FilesystemEventType.REMOVE)
            await handle.stop()
            assert exits == [None]
            # A directory that does not exist: the SDK raises before returning a handle.
            from e2b import NotFoundException

            try:
                await s.files.watch_dir("/tmp/no-such-dir", events.append)
            except NotFoundException:
                pass
            else:
                raise AssertionError("watch_dir of a missing directory did not raise")
        finally:
            await s.kill()

    asyncio.run(main())


def test_sandboxes_do_not_see_each_others_files(server, sbx):
    from e2b import NotFoundException, Sandbox

    sbx.files.write("/tmp/secret.txt", "only for the first")
    other = Sandbox.create(timeout=300)
    try:
        assert other.sandbox_id != sbx.sandbox_id
        assert not other.files.exists("/tmp/secret.txt")
        with pytest.raises(NotFoundException):
            other.files.read("/tmp/secret.txt")
        r = other.commands.run("cat /tmp/secret.txt 2>&1 || true")
        assert "only for the first" not in r.stdout
        # One sandbox's access token does not open another's envd.
        headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "X-Access-Token": other._envd_access_token or "wrong"}
        got = httpx.get(f"{server}/files", params={"path": "/tmp/secret.txt"}, headers=headers)
        assert got.status_code == 401
        assert "only for the first" not in got.text
    finally:
        other.kill()


def test_list_info_timeout_and_kill(server):
    from e2b import Sandbox, SandboxNotFoundException, SandboxQuery

    a = Sandbox.create(timeout=300, metadata={"who": "a"})
    b = Sandbox.create(timeout=300, metadata={"who": "b"})
    try:
        ids = {s.sandbox_id for s in Sandbox.list().next_items()}
        assert {a.sandbox_id, b.sandbox_id} <= ids
        only_a = Sandbox.list(query=SandboxQuery(metadata={"who": "a"})).next_items()
        assert [s.sandbox_id for s in only_a] == [a.sandbox_id]
        pager = Sandbox.list(limit=1, query=SandboxQuery(metadata={"suite": "none"}))
        assert pager.next_items() == []
        pages = []
        pager = Sandbox.list(limit=1)
        while pager.has_next:
            pages.append([s.sandbox_id for s in pager.next_items()])
        assert all(len(p) == 1 for p in pages) and {a.sandbox_id, b.sandbox_id} <= {p[0] for p in pages}
        info = a.get_info()
        assert info.sandbox_id == a.sandbox_id and info.metadata == {"who": "a"} and info.template_id == "base"
        before = info.end_at
        a.set_timeout(3600)
        assert a.get_info().end_at > before
        same = Sandbox.connect(a.sandbox_id)
        assert same.commands.run("echo again").stdout == "again\n"
    finally:
        a.kill()
        b.kill()
    assert Sandbox.kill(a.sandbox_id) is False
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(a.sandbox_id)
    assert a.sandbox_id not in {s.sandbox_id for s in Sandbox.list().next_items()}


def test_create_envs_reach_commands(server):
    from e2b import Sandbox

    s = Sandbox.create(timeout=300, envs={"FROM_CREATE": "yes it is"})
    try:
        assert s.commands.run("echo \"$FROM_CREATE\"").stdout == "yes it is\n"
    finally:
        s.kill()


def test_a_sandbox_past_its_lifetime_is_gone(server):
    from e2b import NotFoundException, Sandbox

    s = Sandbox.create(timeout=5)
    assert s.commands.run("echo alive").stdout == "alive\n"
    # Stopped by the daemon at its lifetime, then removed (an E2B client never deletes a timed-out sandbox).
    wait_for(lambda: s.sandbox_id not in {x.sandbox_id for x in Sandbox.list().next_items()}, "the sandbox to end")
    with pytest.raises(NotFoundException):
        Sandbox.get_info(s.sandbox_id)
    wait_for(lambda: Sandbox.kill(s.sandbox_id) is False, "the ended sandbox to be removed", seconds=15)


def daemon_api():
    return httpx.Client(transport=httpx.HTTPTransport(uds=DAEMON["socket"]), base_url="http://airlock", timeout=60)


def test_a_template_naming_a_warm_pool_takes_a_ready_sandbox(server):
    from e2b import Sandbox, SandboxException

    api = daemon_api()
    made = api.post("/v1/pools", json={"name": "warm", "size": 1, "sandbox": {"env": {"FROM": "pool"}}})
    assert made.status_code == 201, made.text
    try:
        ready = lambda: api.get("/v1/pools").json()["pools"][0]["ready"]  # noqa: E731
        sandboxes = DAEMON["state"] / "sandboxes"

        def running(d):
            try:
                return json.loads((d / "sandbox.json").read_text()).get("status") == "running"
            except (OSError, ValueError):
                return False

        def one_waiting():
            # Running (its record written by `airlock create`), not only being made.
            return ready() == 1 and any(running(d) for d in sandboxes.glob("pool-*"))

        wait_for(one_waiting, "the pool to fill", seconds=90)
        time.sleep(0.5)
        started = time.monotonic()
        s = Sandbox.create(template="warm", timeout=300)
        took = time.monotonic() - started
        try:
            # The pool's sandbox (named pool-…; one made cold would be sbx-…), with the pool's environment.
            assert s.sandbox_id.startswith("pool-"), s.sandbox_id
            assert took < 3, f"a create from a pool took {took:.1f} s"
            assert s.commands.run("echo $FROM").stdout == "pool\n"
            assert s.get_info().template_id == "warm"
            assert s.sandbox_id in {x.sandbox_id for x in Sandbox.list().next_items()}
            wait_for(lambda: ready() == 1, "the pool to refill", seconds=90)
            # A pool's sandboxes are made already: envs at create are refused, not dropped.
            with pytest.raises(SandboxException, match="warm pool"):
                Sandbox.create(template="warm", envs={"X": "1"})
        finally:
            s.kill()
    finally:
        assert api.delete("/v1/pools/warm").status_code == 204
        wait_for(lambda: not list((DAEMON["state"] / "sandboxes").glob("pool-*")), "the pool's sandboxes to go",
                 seconds=90)
        api.close()


def test_a_template_that_is_neither_a_pool_nor_a_profile_is_refused(server):
    from e2b import Sandbox, SandboxException

    with pytest.raises(SandboxException, match="template no-such-template not found"):
        Sandbox.create(template="no-such-template")
    # A built-in profile is a template too.
    s = Sandbox.create(template="strict", timeout=60)
    try:
        assert s.get_info().template_id == "strict"
        assert s.commands.run("echo ok").stdout == "ok\n"
    finally:
        s.kill()


def test_an_unknown_sandbox_is_not_found(server):
    from e2b import NotFoundException, Sandbox

    with pytest.raises(NotFoundException):
        Sandbox.connect("sbx-000000000000")
    with pytest.raises(NotFoundException):
        Sandbox.get_info("no-such-sandbox")
    assert Sandbox.kill("sbx-000000000000") is False


def test_a_wrong_api_key_is_refused(server):
    from e2b import AuthenticationException, Sandbox

    with pytest.raises(AuthenticationException):
        Sandbox.create(api_key="not-the-token")
    answer = httpx.get(f"{server}/v2/sandboxes", headers={"X-API-KEY": "not-the-token"})
    assert answer.status_code == 401


def test_a_template_naming_an_image_creates_from_it(server):
    """A templateID that names an image in the daemon's store: the sandbox's `/` is the image (writable), with its
    config's environment (the image: scripts/testlib/busybox_image.py, imported with airlock image import)."""
    from e2b import Sandbox

    save = DAEMON["state"].parent / "bb-e2b.tar"
    write_busybox_image(save, "test/bb:e2b")
    imported = subprocess.run([AIRLOCK, "image", "import", str(save)], capture_output=True, text=True,
                              env={**{k: v for k, v in os.environ.items() if k != "AIRLOCK_HOST"},
                                   "AIRLOCK_STATE_DIR": str(DAEMON["state"])})
    assert imported.returncode == 0, imported.stderr
    s = Sandbox.create(template="test/bb:e2b", timeout=60)
    try:
        assert s.get_info().template_id == "test/bb:e2b"
        out = s.commands.run("cat /etc/motd; echo $GREETING; touch /written && echo wrote")
        assert out.stdout == "from the image\nhello\nwrote\n", out
    finally:
        s.kill()


def test_metadata_dev_airlock_isolation_vm_runs_commands_in_a_guest(server, tmp_path):
    from e2b import Sandbox

    if shutil.which("qemu-system-x86_64") is None or not list(Path("/boot").glob("vmlinuz-*")):
        if os.environ.get("CI") == "true":
            pytest.fail("no QEMU or no guest kernel in /boot (scripts/setup-debian installs them)")
        pytest.skip("no QEMU or no guest kernel in /boot")
    # The template (a profile file) picks only the emulator (TCG); the VM is the metadata's.
    profile = tmp_path / "tcg.toml"
    profile.write_text('[vm]\naccel = "tcg"\n')
    s = Sandbox.create(template=str(profile), timeout=120, metadata={"dev.airlock.isolation": "vm"})
    try:
        guest = s.commands.run("uname -r").stdout
        assert guest.strip() and guest != os.uname().release + "\n", guest
        assert s.commands.run("echo ok").stdout == "ok\n"
        # The files API reaches into the guest's sandbox (through the supervisor's socket): written, read back,
        # listed, seen by a command, removed; a missing file is not found.
        from e2b import NotFoundException

        blob = bytes(range(256)) * 64
        s.files.write("/tmp/vm/blob.bin", blob)
        assert s.files.read("/tmp/vm/blob.bin", format="bytes") == blob
        s.files.write("/tmp/vm/hello.txt", "héllo\n")
        assert s.files.read("/tmp/vm/hello.txt") == "héllo\n"
        assert sorted(e.name for e in s.files.list("/tmp/vm")) == ["blob.bin", "hello.txt"]
        assert s.commands.run("wc -c < /tmp/vm/blob.bin").stdout.strip() == str(len(blob))
        # A background command holds neither the next command nor the files API (each runs in a slot of its own
        # in the guest; before: they waited for it to end).
        h = s.commands.run("sleep 600", background=True)
        assert s.commands.run("echo beside", timeout=60).stdout == "beside\n"
        assert s.files.read("/tmp/vm/blob.bin", format="bytes") == blob
        s.commands.kill(h.pid)
        s.files.remove("/tmp/vm/hello.txt")
        with pytest.raises(NotFoundException):
            s.files.read("/tmp/vm/hello.txt")
    finally:
        s.kill()
