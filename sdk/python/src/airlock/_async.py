"""The asyncio client: :class:`AsyncClient`, :class:`AsyncSandbox`, :class:`AsyncFiles`, :class:`AsyncPool`, the
same methods as the blocking ones, awaited."""

from __future__ import annotations

import builtins
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, Unpack

import httpx

from . import _core
from .errors import ConnectionFailed, NotFound, error_from_answer
from .models import (
    Checkpoint,
    Diff,
    DirEntry,
    Duration,
    ExecEvent,
    ExecResult,
    Health,
    SandboxInfo,
    SandboxSpec,
    exec_event,
)

T = TypeVar("T")


class AsyncClient:
    """A connection to one ``airlock serve``; the arguments are :class:`airlock.Client`'s."""

    def __init__(
        self,
        host: str | None = None,
        token: str | None = None,
        *,
        timeout: httpx.Timeout | float | None = _core.DEFAULT_TIMEOUT,
    ) -> None:
        self.endpoint = _core.Endpoint.resolve(host, token)
        transport = httpx.AsyncHTTPTransport(uds=self.endpoint.socket_path) if self.endpoint.socket_path else None
        # trust_env=False: a proxy from the environment must not stand between a client and its daemon.
        self._http = httpx.AsyncClient(
            base_url=self.endpoint.base_url,
            headers=self.endpoint.headers(),
            timeout=timeout,
            transport=transport,
            trust_env=False,
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """Sends a request and reads its answer; an error answer is raised as its :class:`AirlockError`."""
        try:
            response = await self._http.request(method, path, json=json, params=params, content=content)
        except httpx.TransportError as e:
            raise ConnectionFailed(f"cannot reach the airlock daemon at {self.endpoint.url}: {e}") from e
        if response.status_code >= 400:
            raise error_from_answer(response.status_code, response.content)
        return response

    async def open(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Sends a request and returns its answer with the body unread (the caller closes it)."""
        request = self._http.build_request(method, path, json=json, params=params, headers=headers)
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as e:
            raise ConnectionFailed(f"cannot reach the airlock daemon at {self.endpoint.url}: {e}") from e
        if response.status_code >= 400:
            try:
                body = await response.aread()
            finally:
                await response.aclose()
            raise error_from_answer(response.status_code, body)
        return response

    async def health(self) -> Health:
        obj = (await self.request("GET", "/v1/health")).json()
        return Health(version=obj["version"], sandboxes=int(obj["sandboxes"]))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


@asynccontextmanager
async def _connection(client: AsyncClient | None, host: str | None, token: str | None) -> AsyncIterator[AsyncClient]:
    """``client``, or a new one for ``host`` closed at the end."""
    if client is not None:
        yield client
        return
    async with AsyncClient(host, token) as own:
        yield own


class AsyncLineStream(Generic[T]):
    """The JSON lines of an answer as they arrive, each turned into a ``T``. The request goes when the stream is
    entered (``async with``) or first iterated (``async for``); ``aclose`` (or the ``async with``'s end) stops it
    early."""

    def __init__(
        self, open_response: Callable[[], Awaitable[httpx.Response]], parse: Callable[[dict[str, Any]], T], url: str
    ) -> None:
        self._open_response = open_response
        self._response: httpx.Response | None = None
        self._lines: AsyncIterator[str] | None = None
        self._parse = parse
        self._url = url

    async def _start(self) -> AsyncIterator[str]:
        if self._lines is None:
            self._response = await self._open_response()
            self._lines = self._response.aiter_lines()
        return self._lines

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        lines = await self._start()
        while True:
            try:
                line = await anext(lines)
            except StopAsyncIteration:
                await self.aclose()
                raise
            except httpx.TransportError as e:
                await self.aclose()
                raise ConnectionFailed(f"the answer of the airlock daemon at {self._url} broke off: {e}") from e
            if line.strip():
                return self._parse(json.loads(line))

    async def aclose(self) -> None:
        if self._response is not None:
            await self._response.aclose()

    async def __aenter__(self) -> Self:
        await self._start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class AsyncFiles:
    """Files inside a running sandbox (paths are the sandbox's, resolved inside its own root)."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sandbox = sandbox

    def _path(self) -> str:
        return _core.sandbox_path(self._sandbox.name, "files")

    async def read(self, path: str) -> bytes:
        """The file's bytes. A directory raises :class:`IsADirectoryError` (see :meth:`list`)."""
        response = await self._sandbox.client.open("GET", self._path(), params=_core.file_params(path))
        try:
            if _core.is_directory_listing(response):
                raise IsADirectoryError(f"{path} is a directory in sandbox {self._sandbox.name}")
            return await response.aread()
        finally:
            await response.aclose()

    async def list(self, path: str) -> builtins.list[DirEntry]:
        """A directory's entries. A file raises :class:`NotADirectoryError`."""
        response = await self._sandbox.client.open("GET", self._path(), params=_core.file_params(path))
        try:
            if not _core.is_directory_listing(response):
                raise NotADirectoryError(f"{path} is not a directory in sandbox {self._sandbox.name}")
            return [DirEntry.from_json(e) for e in json.loads(await response.aread())["entries"]]
        finally:
            await response.aclose()

    async def write(self, path: str, data: bytes | str, *, mode: int | None = None) -> None:
        """Writes the file (text as UTF-8), creating its parent directories; ``mode`` such as ``0o755``."""
        content = data.encode() if isinstance(data, str) else data
        await self._sandbox.client.request("PUT", self._path(), params=_core.file_params(path, mode), content=content)

    async def remove(self, path: str) -> None:
        """Removes a file, symlink or whole directory."""
        await self._sandbox.client.request("DELETE", self._path(), params=_core.file_params(path))


class _Creating:
    """``AsyncSandbox.create(...)``: awaited, the sandbox; in an ``async with``, the sandbox, deleted at its end."""

    def __init__(self, made: Awaitable[AsyncSandbox]) -> None:
        self._made = made
        self._sandbox: AsyncSandbox | None = None

    def __await__(self) -> Generator[Any, None, AsyncSandbox]:
        return self._made.__await__()

    async def __aenter__(self) -> AsyncSandbox:
        self._sandbox = await self._made
        return self._sandbox

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._sandbox is not None:
            await self._sandbox.__aexit__(exc_type, exc, tb)


class AsyncSandbox:
    """A sandbox of the daemon, for asyncio: ``sb = await AsyncSandbox.create(...)`` or ``async with
    AsyncSandbox.create(...) as sb:`` (deleted at the end); :meth:`connect` reaches an existing one."""

    def __init__(self, info: SandboxInfo, client: AsyncClient, *, owns_client: bool = False) -> None:
        self.info = info
        self.client = client
        self._owns_client = owns_client
        self.files = AsyncFiles(self)

    @property
    def name(self) -> str:
        return self.info.name

    def __repr__(self) -> str:
        return f"AsyncSandbox({self.name!r}, state={self.info.state!r})"

    @classmethod
    def create(
        cls,
        *,
        host: str | None = None,
        token: str | None = None,
        client: AsyncClient | None = None,
        **spec: Unpack[SandboxSpec],
    ) -> _Creating:
        """Creates a sandbox (``name``, ``workspace``, ``memory``, ``timeout``, ``pool``... as in
        :class:`SandboxSpec`)."""

        async def made() -> AsyncSandbox:
            own = client is None
            conn = client or AsyncClient(host, token)
            try:
                obj = (await conn.request("POST", "/v1/sandboxes", json=_core.spec_body(spec))).json()
            except BaseException:
                if own:
                    await conn.aclose()
                raise
            return cls(SandboxInfo.from_json(obj), conn, owns_client=own)

        return _Creating(made())

    @classmethod
    async def connect(
        cls, name: str, *, host: str | None = None, token: str | None = None, client: AsyncClient | None = None
    ) -> AsyncSandbox:
        """The existing sandbox ``name`` (:class:`NotFound` if the daemon has none)."""
        own = client is None
        conn = client or AsyncClient(host, token)
        try:
            obj = (await conn.request("GET", _core.sandbox_path(name))).json()
        except BaseException:
            if own:
                await conn.aclose()
            raise
        return cls(SandboxInfo.from_json(obj), conn, owns_client=own)

    @staticmethod
    async def list(
        *, host: str | None = None, token: str | None = None, client: AsyncClient | None = None
    ) -> builtins.list[SandboxInfo]:
        """The sandboxes the daemon owns (not those waiting in a pool)."""
        async with _connection(client, host, token) as conn:
            answer = (await conn.request("GET", "/v1/sandboxes")).json()
            return [SandboxInfo.from_json(s) for s in answer["sandboxes"]]

    async def _json(self, method: str, *rest: str, body: Any = None, params: Mapping[str, str] | None = None) -> Any:
        path = _core.sandbox_path(self.name, *rest)
        return (await self.client.request(method, path, json=body, params=params)).json()

    async def refresh(self) -> SandboxInfo:
        """Reads the sandbox's state again."""
        self.info = SandboxInfo.from_json(await self._json("GET"))
        return self.info

    async def exec(
        self,
        cmd: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | None = None,
        timeout: Duration | None = None,
    ) -> ExecResult:
        """Runs a command (a list of arguments, or one string for ``sh -c``) and waits for its end."""
        body = _core.exec_body(cmd, env, cwd, stdin, timeout)
        return ExecResult.from_json(await self._json("POST", "exec", body=body))

    def exec_stream(
        self,
        cmd: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | None = None,
        timeout: Duration | None = None,
    ) -> AsyncLineStream[ExecEvent]:
        """Runs a command and yields its events as they happen (``async for``): :class:`ExecStarted`, then
        :class:`ExecStdout` and :class:`ExecStderr`, then :class:`ExecExit`. Closing the stream early does not
        kill the command."""
        body = _core.exec_body(cmd, env, cwd, stdin, timeout)

        def start() -> Awaitable[httpx.Response]:
            return self.client.open(
                "POST", _core.sandbox_path(self.name, "exec"), json=body, headers={"Accept": "application/x-ndjson"}
            )

        return AsyncLineStream(start, exec_event, self.client.endpoint.url)

    async def diff(self) -> Diff:
        """The workspace's changes not yet committed."""
        return Diff.from_json(await self._json("GET", "diff"))

    async def commit(self, paths: Sequence[str] | None = None, *, force: bool = False) -> int:
        """Writes the workspace's changes (or those under ``paths``) to the host; returns how many. Host files
        changed since the sandbox started raise :class:`Conflict` (``details["conflicts"]``) unless ``force``."""
        return int((await self._json("POST", "commit", body=_core.paths_body(paths, force)))["committed"])

    async def discard(self, paths: Sequence[str] | None = None) -> int:
        """Drops the workspace's changes (or those under ``paths``); returns how many."""
        return int((await self._json("POST", "discard", body=_core.paths_body(paths)))["discarded"])

    async def checkpoint(self, label: str | None = None) -> Checkpoint:
        """Saves the layer's state under ``label`` (the daemon numbers one without)."""
        body = {} if label is None else {"label": label}
        return Checkpoint.from_json(await self._json("POST", "checkpoints", body=body))

    async def checkpoints(self) -> builtins.list[Checkpoint]:
        obj = await self._json("GET", "checkpoints")
        return [Checkpoint.from_json(c) for c in obj.get("checkpoints") or []]

    async def rollback(self, label: str) -> None:
        """Puts the layer back to checkpoint ``label`` (:class:`NotFound` if there is none)."""
        await self.client.request("POST", _core.sandbox_path(self.name, "rollback"), json={"label": label})

    async def logs(self) -> builtins.list[dict[str, Any]]:
        """The sandbox's audit records so far (see docs/audit.md)."""
        text = (await self.client.request("GET", _core.sandbox_path(self.name, "logs"))).text
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def follow_logs(self) -> AsyncLineStream[dict[str, Any]]:
        """The audit records, then new ones as they are written, until the sandbox ends or the stream is
        closed."""

        def start() -> Awaitable[httpx.Response]:
            return self.client.open("GET", _core.sandbox_path(self.name, "logs"), params={"follow": "true"})

        return AsyncLineStream(start, dict, self.client.endpoint.url)

    async def stats(self) -> dict[str, Any]:
        """``airlock stats --json``: memory, pids, cpu. Only a sandbox created with limits has them
        (:class:`Conflict` otherwise)."""
        result: dict[str, Any] = await self._json("GET", "stats")
        return result

    async def set_timeout(self, timeout: Duration) -> SandboxInfo:
        """Sets the sandbox's lifetime from now (then the daemon stops it, keeping its changes)."""
        self.info = SandboxInfo.from_json(
            await self._json("POST", "timeout", body={"timeout": _core.duration_text(timeout)})
        )
        return self.info

    async def delete(self, *, keep: bool = False) -> None:
        """Stops the sandbox and removes it; with ``keep``, only stops it (its changes stay for :meth:`diff` and
        :meth:`commit`)."""
        params = {"keep": "true"} if keep else None
        await self.client.request("DELETE", _core.sandbox_path(self.name), params=params)

    async def stop(self) -> None:
        """Stops the sandbox and keeps it (``delete(keep=True)``)."""
        await self.delete(keep=True)

    async def kill(self) -> None:
        """Stops and removes the sandbox, as the end of its ``async with`` does; one already gone is not an
        error."""
        try:
            await self.delete()
        except NotFound:
            pass

    async def aclose(self) -> None:
        """Closes the connection this sandbox opened (the sandbox itself stays)."""
        if self._owns_client:
            await self.client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.kill()
        finally:
            await self.aclose()


class AsyncPool:
    """A warm pool (see :class:`airlock.Pool`), for asyncio."""

    def __init__(
        self,
        name: str,
        size: int,
        ready: int,
        spec: dict[str, Any],
        *,
        host: str | None = None,
        token: str | None = None,
        client: AsyncClient | None = None,
    ) -> None:
        self.name = name
        self.size = size
        #: How many sandboxes were ready when this was read.
        self.ready = ready
        self.spec = spec
        self._host, self._token, self._client = host, token, client

    def __repr__(self) -> str:
        return f"AsyncPool({self.name!r}, size={self.size}, ready={self.ready})"

    @classmethod
    def _from_json(
        cls, obj: dict[str, Any], host: str | None, token: str | None, client: AsyncClient | None
    ) -> AsyncPool:
        return cls(
            obj["name"],
            int(obj["size"]),
            int(obj.get("ready", 0)),
            obj.get("sandbox") or {},
            host=host,
            token=token,
            client=client,
        )

    @classmethod
    async def create(
        cls,
        name: str,
        size: int,
        spec: SandboxSpec | None = None,
        *,
        host: str | None = None,
        token: str | None = None,
        client: AsyncClient | None = None,
    ) -> AsyncPool:
        """Creates the pool; the daemon fills it in the background."""
        body = {"name": name, "size": size, "sandbox": _core.spec_body(spec or {})}
        async with _connection(client, host, token) as conn:
            return cls._from_json((await conn.request("POST", "/v1/pools", json=body)).json(), host, token, client)

    @classmethod
    async def list(
        cls, *, host: str | None = None, token: str | None = None, client: AsyncClient | None = None
    ) -> builtins.list[AsyncPool]:
        async with _connection(client, host, token) as conn:
            pools = (await conn.request("GET", "/v1/pools")).json()["pools"]
            return [cls._from_json(p, host, token, client) for p in pools]

    async def delete(self) -> None:
        """Removes the pool and the sandboxes waiting in it (those already taken stay)."""
        async with _connection(self._client, self._host, self._token) as conn:
            await conn.request("DELETE", _core.pool_path(self.name))
