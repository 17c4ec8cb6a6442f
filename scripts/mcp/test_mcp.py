"""`airlock mcp` driven by the official MCP Python client (`mcp`, pinned in scripts/setup-debian).

Run by scripts/mcp-test (root; AIRLOCK names the binary). Every test runs over three transports: stdio
(daemonless, the server runs airlock's own subcommands), streamable HTTP on 127.0.0.1, and stdio with AIRLOCK_HOST
naming a real `airlock serve` on a temporary Unix socket; and one test wraps another stdio MCP server in
`airlock run`. Each test has its own state directory, and every sandbox left in it is stopped and removed at the
end (a test that leaves one fails).
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "testlib"))
from busybox_image import write_busybox_image  # noqa: E402

AIRLOCK = os.environ.get("AIRLOCK", "airlock")
TRANSPORTS = ["stdio", "http", "daemon"]
TOOLS = {
    "create_sandbox", "run_command", "write_file", "read_file", "list_files", "diff", "commit", "checkpoint",
    "rollback", "logs", "list_sandboxes", "destroy_sandbox",
}

# The HTTP client must reach 127.0.0.1 directly, whatever proxy the environment names.
for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
    os.environ.pop(var, None)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class World:
    """One test's state directory, workspace, and (daemon transport) `airlock serve`."""

    def __init__(self, tmp: Path, transport: str):
        self.tmp = tmp
        self.transport = transport
        self.state = tmp / "state"
        self.ws = tmp / "ws"
        self.ws.mkdir()
        self.env = {"AIRLOCK_STATE_DIR": str(self.state)}
        self.daemon = None
        if transport == "daemon":
            sock = tmp / "airlock.sock"
            self.daemon = subprocess.Popen(
                [AIRLOCK, "serve", "--socket", str(sock), "--state-dir", str(self.state)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(tmp / "serve.log", "w"),
                env={**os.environ, **self.env},
            )
            wait_for(sock.exists, "airlock serve's socket")
            self.env["AIRLOCK_HOST"] = f"unix://{sock}"

    def cleanup(self):
        if self.daemon is not None:
            stop(self.daemon)
        left = []
        sandboxes = self.state / "sandboxes"
        if sandboxes.is_dir():
            for d in sandboxes.iterdir():
                left.append(d.name)
                env = {**os.environ, "AIRLOCK_STATE_DIR": str(self.state)}
                env.pop("AIRLOCK_HOST", None)
                for sub in ("stop", "rm"):
                    subprocess.run([AIRLOCK, sub, "--", d.name], env=env, capture_output=True)
        return left

    @contextlib.asynccontextmanager
    async def session(self):
        if self.transport in ("stdio", "daemon"):
            env = {k: v for k, v in os.environ.items() if k != "AIRLOCK_HOST"}
            env.update(self.env)
            params = StdioServerParameters(command=AIRLOCK, args=["mcp"], env=env)
            with open(self.tmp / "mcp-stderr.log", "w") as errlog:
                async with stdio_client(params, errlog=errlog) as (read, write):
                    async with ClientSession(read, write) as s:
                        s.init = await s.initialize()
                        yield s
            return
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "AIRLOCK_HOST"}
        env.update(self.env)
        server = subprocess.Popen(
            [AIRLOCK, "mcp", "--http", f"127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.tmp / "mcp-http.log", "w"), env=env,
        )

        def listening():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        try:
            wait_for(listening, "airlock mcp --http to listen")
            async with streamable_http_client(f"http://127.0.0.1:{port}/mcp") as streams:
                async with ClientSession(streams[0], streams[1]) as s:
                    s.init = await s.initialize()
                    yield s
        finally:
            code = stop(server)
        assert code == 0, f"airlock mcp --http exited {code}: {(self.tmp / 'mcp-http.log').read_text()}"


@pytest.fixture(params=TRANSPORTS)
def world(request, tmp_path):
    w = World(tmp_path, request.param)
    yield w
    left = w.cleanup()
    assert not left, f"sandboxes left behind: {left}"


def text(result):
    assert len(result.content) == 1, result
    return result.content[0].text


def ok(result):
    assert not result.is_error, text(result)
    return json.loads(text(result))


def refused(result):
    assert result.is_error, f"expected an error result, got {text(result)}"
    message = text(result)
    assert message.startswith("airlock: "), message
    return message


async def call(s, tool, **args):
    return await s.call_tool(tool, args)


def test_initialize_and_list_tools(world):
    async def body():
        async with world.session() as s:
            assert s.init.server_info.name == "airlock"
            assert s.init.capabilities.tools is not None
            tools = {t.name: t for t in (await s.list_tools()).tools}
            assert set(tools) == TOOLS
            for t in tools.values():
                assert t.description, t.name
                assert t.input_schema.get("type") == "object", t.name
            props = lambda name: set(tools[name].input_schema.get("properties", {}))  # noqa: E731
            assert props("create_sandbox") == {"image", "workspace", "allow", "timeout"}
            assert props("run_command") == {"sandbox", "command", "timeout"}
            assert set(tools["run_command"].input_schema["required"]) == {"sandbox", "command"}
            assert props("write_file") == {"sandbox", "path", "content"}
            assert props("commit") == {"sandbox", "paths"}
            assert props("checkpoint") == props("rollback") == {"sandbox", "label"}
            assert props("list_sandboxes") == set()

    anyio.run(body)


def test_every_tool_on_a_workspace(world):
    ws = world.ws
    (ws / "kept.txt").write_text("from the host\n")

    async def body():
        async with world.session() as s:
            name = ok(await call(s, "create_sandbox", workspace=str(ws), timeout="10m"))["name"]
            try:
                assert ok(await call(s, "write_file", sandbox=name, path=f"{ws}/hello.txt", content="hello\n"))
                assert ok(await call(s, "read_file", sandbox=name, path=f"{ws}/hello.txt"))["content"] == "hello\n"
                assert not (ws / "hello.txt").exists(), "a copy-on-write workspace changed the host before commit"
                entries = ok(await call(s, "list_files", sandbox=name, path=str(ws)))["entries"]
                assert {e["name"] for e in entries} >= {"hello.txt", "kept.txt"}

                ran = ok(await call(s, "run_command", sandbox=name,
                                    command="cat hello.txt; cat kept.txt; echo oops >&2; exit 7"))
                assert ran["exit_code"] == 7, ran
                assert ran["stdout"] == "hello\nfrom the host\n", ran
                assert ran["stderr"] == "oops\n", ran
                ran = ok(await call(s, "run_command", sandbox=name, command=["/bin/echo", "a  b"]))
                assert (ran["exit_code"], ran["stdout"]) == (0, "a  b\n"), ran

                changes = ok(await call(s, "diff", sandbox=name))["changes"]
                assert [(c["path"], c["kind"]) for c in changes] == [("hello.txt", "added")], changes

                assert ok(await call(s, "checkpoint", sandbox=name, label="c1"))["label"] == "c1"
                ok(await call(s, "write_file", sandbox=name, path=f"{ws}/later.txt", content="later"))
                ok(await call(s, "rollback", sandbox=name, label="c1"))
                refused(await call(s, "read_file", sandbox=name, path=f"{ws}/later.txt"))
                refused(await call(s, "rollback", sandbox=name, label="no-such-label"))

                assert ok(await call(s, "commit", sandbox=name))["committed"] == 1
                assert (ws / "hello.txt").read_text() == "hello\n"
                assert not (ws / "later.txt").exists()

                records = ok(await call(s, "logs", sandbox=name))["records"]
                kinds = {r.get("kind") for r in records if isinstance(r, dict)}
                assert "created" in kinds, kinds

                listed = ok(await call(s, "list_sandboxes"))["sandboxes"]
                assert name in [x["name"] for x in listed], listed
                if world.transport == "daemon":
                    # The daemon's own sandbox objects: the calls went to `airlock serve`, not around it.
                    assert all("spec" in x for x in listed), listed
            finally:
                destroyed = await call(s, "destroy_sandbox", sandbox=name)
            assert ok(destroyed) == {"destroyed": name}
            listed = ok(await call(s, "list_sandboxes"))["sandboxes"]
            assert name not in [x["name"] for x in listed], listed
            refused(await call(s, "destroy_sandbox", sandbox=name))

    anyio.run(body)


def test_a_plain_sandbox_and_a_command_timeout(world):
    async def body():
        async with world.session() as s:
            name = ok(await call(s, "create_sandbox"))["name"]
            try:
                ran = ok(await call(s, "run_command", sandbox=name, command="echo hi; ls /"))
                assert ran["exit_code"] == 0 and ran["stdout"].startswith("hi\n"), ran
                ran = ok(await call(s, "run_command", sandbox=name, command="sleep 30", timeout=1))
                assert ran["exit_code"] == 124 and ran["timed_out"], ran
                ok(await call(s, "write_file", sandbox=name, path="/tmp/x/y.txt", content="ü"))
                assert ok(await call(s, "read_file", sandbox=name, path="/tmp/x/y.txt"))["content"] == "ü"
                # No workspace: nothing to diff or checkpoint, said as a refusal.
                refused(await call(s, "checkpoint", sandbox=name, label="c1"))
            finally:
                ok(await call(s, "destroy_sandbox", sandbox=name))

    anyio.run(body)


def test_a_sandbox_from_an_image(world):
    """`create_sandbox {image}`: the image (imported into the state directory) as a writable `/`, its Env applied."""
    save = world.tmp / "bb.tar"
    write_busybox_image(save, "test/bb:mcp")
    env = {k: v for k, v in os.environ.items() if k != "AIRLOCK_HOST"}
    env["AIRLOCK_STATE_DIR"] = str(world.state)
    imported = subprocess.run([AIRLOCK, "image", "import", str(save)], env=env, capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr

    async def body():
        async with world.session() as s:
            name = ok(await call(s, "create_sandbox", image="test/bb:mcp"))["name"]
            try:
                ran = ok(await call(s, "run_command", sandbox=name,
                                    command="cat /etc/motd; echo $GREETING; touch /made && echo wrote"))
                assert ran["exit_code"] == 0 and ran["stdout"] == "from the image\nhello\nwrote\n", ran
            finally:
                ok(await call(s, "destroy_sandbox", sandbox=name))

    anyio.run(body)


def test_refusals_are_error_results(world):
    async def body():
        async with world.session() as s:
            msg = refused(await call(s, "run_command", sandbox="no-such-sandbox", command="true"))
            assert "no-such-sandbox" in msg, msg
            # An image the store does not have, and one that is not a reference at all.
            msg = refused(await call(s, "create_sandbox", image="ubuntu:24.04"))
            assert "image" in msg, msg
            msg = refused(await call(s, "create_sandbox", image="--rm"))
            assert "not an image reference" in msg, msg
            refused(await call(s, "create_sandbox", workspace="relative/dir"))
            refused(await call(s, "create_sandbox", timeout="soon"))
            refused(await call(s, "read_file", sandbox="no-such-sandbox", path="relative"))
            refused(await call(s, "checkpoint", sandbox="no-such-sandbox", label="../x"))
            refused(await call(s, "diff", sandbox="no-such-sandbox"))
            # A malformed call (an unknown argument) is refused too, by the schema.
            bad = await call(s, "list_files", sandbox="x", path="/", extra=1)
            assert bad.is_error, bad
            assert ok(await call(s, "list_sandboxes")) == {"sandboxes": []}

    anyio.run(body)


WRAPPED_SERVER = """
import json, os
from mcp.server.mcpserver import MCPServer

app = MCPServer("wrapped")


@app.tool()
def look(secret: str) -> str:
    try:
        with open("made-by-the-server.txt", "w") as f:
            f.write("x")
        wrote = True
    except OSError:
        wrote = False
    return json.dumps({"cwd": os.getcwd(), "sees_secret": os.path.exists(secret), "wrote": wrote})


app.run()
"""


def test_another_stdio_server_wrapped_in_airlock_run(tmp_path):
    """The README's recipe: any stdio MCP server run under `airlock run`, so the server itself is sandboxed; the
    MCP session passes through airlock's standard input and output untouched."""
    ws = tmp_path / "project"
    ws.mkdir()
    ws.chmod(0o777)  # root inside is not root outside: let the sandbox's user write (to its layer)
    (ws / "server.py").write_text(WRAPPED_SERVER)
    secret = tmp_path / "secret.txt"
    secret.write_text("host only")
    # This interpreter and its venv, read-only inside (they may live anywhere: /opt, a pyenv under /root).
    binds = []
    for d in sorted({sys.base_prefix, sys.prefix}):
        binds += ["--ro-bind", d]
    params = StdioServerParameters(
        command=AIRLOCK,
        args=["run", "--rm", "--workspace", str(ws), *binds, "--", sys.executable, "server.py"],
        env={**os.environ, "AIRLOCK_STATE_DIR": str(tmp_path / "state")},
    )

    async def body():
        with open(tmp_path / "stderr.log", "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write) as s:
                    init = await s.initialize()
                    assert init.server_info.name == "wrapped"
                    assert [t.name for t in (await s.list_tools()).tools] == ["look"]
                    seen = json.loads(text(await s.call_tool("look", {"secret": str(secret)})))
        assert seen["cwd"] == str(ws), seen
        assert seen["sees_secret"] is False, "the wrapped server saw a host file outside its workspace"
        assert seen["wrote"] is True, seen
        assert not (ws / "made-by-the-server.txt").exists(), "the wrapped server wrote to the host workspace"

    anyio.run(body)
