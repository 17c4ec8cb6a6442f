"""The blocking client: :class:`Client`, :class:`Sandbox`, :class:`Files`, :class:`Pool`."""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
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


class Client:
    """A connection to one ``airlock serve``.

    ``host``: ``unix:///path/to/socket`` or ``http://host:port`` (default ``AIRLOCK_HOST``, else the daemon's
    default socket); ``token``: the bearer token of a TCP daemon (default ``AIRLOCK_TOKEN``). ``timeout``: httpx's
    timeout for each request (default: 10 s to connect, no limit on the answer, as an exec takes as long as its
    command).
    """

    def __init__(
        self,
        host: str | None = None,
        token: str | None = None,
        *,
        timeout: httpx.Timeout | float | None = _core.DEFAULT_TIMEOUT,
    ) -> None:
        self.endpoint = _core.Endpoint.resolve(host, token)
        transport = httpx.HTTPTransport(uds=self.endpoint.socket_path) if self.endpoint.socket_path else None
        # trust_env=False: a proxy from the environment must not stand between a client and its daemon.
        self._http = httpx.Client(
            base_url=self.endpoint.base_url,
            headers=self.endpoint.headers(),
            timeout=timeout,
            transport=transport,
            trust_env=False,
        )

    def request(
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
            response = self._http.request(method, path, json=json, params=params, content=content)
        except httpx.TransportError as e:
            raise ConnectionFailed(f"cannot reach the airlock daemon at {self.endpoint.url}: {e}") from e
        if response.status_code >= 400:
            raise error_from_answer(response.status_code, response.content)
        return response

    def open(
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
            response = self._http.send(request, stream=True)
        except httpx.TransportError as e:
            raise ConnectionFailed(f"cannot reach the airlock daemon at {self.endpoint.url}: {e}") from e
        if response.status_code >= 400:
            try:
                body = response.read()
            finally:
                response.close()
            raise error_from_answer(response.status_code, body)
        return response

    def health(self) -> Health:
        obj = self.request("GET", "/v1/health").json()
        return Health(version=obj["version"], sandboxes=int(obj["sandboxes"]))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@contextmanager
def _connection(client: Client | None, host: str | None, token: str | None) -> Iterator[Client]:
    """``client``, or a new one for ``host`` closed at the end."""
    if client is not None:
        yield client
        return
    with Client(host, token) as own:
        yield own


class LineStream(Generic[T]):
    """The JSON lines of an answer as they arrive, each turned into a ``T``. Iterate it; close it (or use it in a
    ``with``) to stop early."""

    def __init__(self, response: httpx.Response, parse: Callable[[dict[str, Any]], T], url: str) -> None:
        self._response = response
        self._lines = response.iter_lines()
        self._parse = parse
        self._url = url

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> T:
        while True:
            try:
                line = next(self._lines)
            except StopIteration:
                self.close()
                raise
            except httpx.TransportError as e:
                self.close()
                raise ConnectionFailed(f"the answer of the airlock daemon at {self._url} broke off: {e}") from e
            if line.strip():
                return self._parse(json.loads(line))

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Files:
    """Files inside a running sandbox (paths are the sandbox's, resolved inside its own root)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    def _path(self) -> str:
        return _core.sandbox_path(self._sandbox.name, "files")

    def read(self, path: str) -> bytes:
        """The file's bytes. A directory raises :class:`IsADirectoryError` (see :meth:`list`)."""
        response = self._sandbox.client.open("GET", self._path(), params=_core.file_params(path))
        try:
            if _core.is_directory_listing(response):
                raise IsADirectoryError(f"{path} is a directory in sandbox {self._sandbox.name}")
            return response.read()
        finally:
            response.close()

    def list(self, path: str) -> builtins.list[DirEntry]:
        """A directory's entries. A file raises :class:`NotADirectoryError`."""
        response = self._sandbox.client.open("GET", self._path(), params=_core.file_params(path))
        try:
            if not _core.is_directory_listing(response):
                raise NotADirectoryError(f"{path} is not a directory in sandbox {self._sandbox.name}")
            return [DirEntry.from_json(e) for e in json.loads(response.read())["entries"]]
        finally:
            response.close()

    def write(self, path: str, data: bytes | str, *, mode: int | None = None) -> None:
        """Writes the file (text as UTF-8), creating its parent directories; ``mode`` such as ``0o755``."""
        content = data.encode() if isinstance(data, str) else data
        self._sandbox.client.request("PUT", self._path(), params=_core.file_params(path, mode), content=content)

    def remove(self, path: str) -> None:
        """Removes a file, symlink or whole directory."""
        self._sandbox.client.request("DELETE", self._path(), params=_core.file_params(path))


class Sandbox:
    """A sandbox of the daemon. Make one with :meth:`create` (a context manager: the sandbox is deleted at the
    end of the ``with``) or reach an existing one with :meth:`connect`."""

    def __init__(self, info: SandboxInfo, client: Client, *, owns_client: bool = False) -> None:
        self.info = info
        self.client = client
        self._owns_client = owns_client
        self.files = Files(self)

    @property
    def name(self) -> str:
        return self.info.name

    def __repr__(self) -> str:
        return f"Sandbox({self.name!r}, state={self.info.state!r})"

    @classmethod
    def create(
        cls,
        *,
        host: str | None = None,
        token: str | None = None,
        client: Client | None = None,
        **spec: Unpack[SandboxSpec],
    ) -> Sandbox:
        """Creates a sandbox (``name``, ``workspace``, ``memory``, ``timeout``, ``pool``... as in
        :class:`SandboxSpec`) and returns it running."""
        own = client is None
        conn = client or Client(host, token)
        try:
            obj = conn.request("POST", "/v1/sandboxes", json=_core.spec_body(spec)).json()
        except BaseException:
            if own:
                conn.close()
            raise
        return cls(SandboxInfo.from_json(obj), conn, owns_client=own)

    @classmethod
    def connect(
        cls, name: str, *, host: str | None = None, token: str | None = None, client: Client | None = None
    ) -> Sandbox:
        """The existing sandbox ``name`` (:class:`NotFound` if the daemon has none)."""
        own = client is None
        conn = client or Client(host, token)
        try:
            obj = conn.request("GET", _core.sandbox_path(name)).json()
        except BaseException:
            if own:
                conn.close()
            raise
        return cls(SandboxInfo.from_json(obj), conn, owns_client=own)

    @staticmethod
    def list(
        *, host: str | None = None, token: str | None = None, client: Client | None = None
    ) -> builtins.list[SandboxInfo]:
        """The sandboxes the daemon owns (not those waiting in a pool)."""
        with _connection(client, host, token) as conn:
            return [SandboxInfo.from_json(s) for s in conn.request("GET", "/v1/sandboxes").json()["sandboxes"]]

    def _json(self, method: str, *rest: str, body: Any = None, params: Mapping[str, str] | None = None) -> Any:
        return self.client.request(method, _core.sandbox_path(self.name, *rest), json=body, params=params).json()

    def refresh(self) -> SandboxInfo:
        """Reads the sandbox's state again."""
        self.info = SandboxInfo.from_json(self._json("GET"))
        return self.info

    def exec(
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
        return ExecResult.from_json(self._json("POST", "exec", body=body))

    def exec_stream(
        self,
        cmd: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | None = None,
        timeout: Duration | None = None,
    ) -> LineStream[ExecEvent]:
        """Runs a command and yields its events as they happen: :class:`ExecStarted`, then :class:`ExecStdout`
        and :class:`ExecStderr`, then :class:`ExecExit`. Closing the stream early does not kill the command."""
        response = self.client.open(
            "POST",
            _core.sandbox_path(self.name, "exec"),
            json=_core.exec_body(cmd, env, cwd, stdin, timeout),
            headers={"Accept": "application/x-ndjson"},
        )
        return LineStream(response, exec_event, self.client.endpoint.url)

    def diff(self) -> Diff:
        """The workspace's changes not yet committed."""
        return Diff.from_json(self._json("GET", "diff"))

    def commit(self, paths: Sequence[str] | None = None, *, force: bool = False) -> int:
        """Writes the workspace's changes (or those under ``paths``) to the host; returns how many. Host files
        changed since the sandbox started raise :class:`Conflict` (``details["conflicts"]``) unless ``force``."""
        return int(self._json("POST", "commit", body=_core.paths_body(paths, force))["committed"])

    def discard(self, paths: Sequence[str] | None = None) -> int:
        """Drops the workspace's changes (or those under ``paths``); returns how many."""
        return int(self._json("POST", "discard", body=_core.paths_body(paths))["discarded"])

    def checkpoint(self, label: str | None = None) -> Checkpoint:
        """Saves the layer's state under ``label`` (the daemon numbers one without)."""
        body = {} if label is None else {"label": label}
        return Checkpoint.from_json(self._json("POST", "checkpoints", body=body))

    def checkpoints(self) -> builtins.list[Checkpoint]:
        obj = self._json("GET", "checkpoints")
        return [Checkpoint.from_json(c) for c in obj.get("checkpoints") or []]

    def rollback(self, label: str) -> None:
        """Puts the layer back to checkpoint ``label`` (:class:`NotFound` if there is none)."""
        self.client.request("POST", _core.sandbox_path(self.name, "rollback"), json={"label": label})

    def logs(self) -> builtins.list[dict[str, Any]]:
        """The sandbox's audit records so far (see docs/audit.md)."""
        text = self.client.request("GET", _core.sandbox_path(self.name, "logs")).text
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def follow_logs(self) -> LineStream[dict[str, Any]]:
        """The audit records, then new ones as they are written, until the sandbox ends or the stream is
        closed."""
        response = self.client.open("GET", _core.sandbox_path(self.name, "logs"), params={"follow": "true"})
        return LineStream(response, dict, self.client.endpoint.url)

    def stats(self) -> dict[str, Any]:
        """``airlock stats --json``: memory, pids, cpu. Only a sandbox created with limits has them
        (:class:`Conflict` otherwise)."""
        result: dict[str, Any] = self._json("GET", "stats")
        return result

    def set_timeout(self, timeout: Duration) -> SandboxInfo:
        """Sets the sandbox's lifetime from now (then the daemon stops it, keeping its changes)."""
        self.info = SandboxInfo.from_json(self._json("POST", "timeout", body={"timeout": _core.duration_text(timeout)}))
        return self.info

    def delete(self, *, keep: bool = False) -> None:
        """Stops the sandbox and removes it; with ``keep``, only stops it (its changes stay for :meth:`diff` and
        :meth:`commit`)."""
        params = {"keep": "true"} if keep else None
        self.client.request("DELETE", _core.sandbox_path(self.name), params=params)

    def stop(self) -> None:
        """Stops the sandbox and keeps it (``delete(keep=True)``)."""
        self.delete(keep=True)

    def kill(self) -> None:
        """Stops and removes the sandbox, as the end of its ``with`` does; one already gone is not an error."""
        try:
            self.delete()
        except NotFound:
            pass

    def close(self) -> None:
        """Closes the connection this sandbox opened (the sandbox itself stays)."""
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.kill()
        finally:
            self.close()


class Pool:
    """A warm pool: the daemon keeps ``size`` sandboxes of one spec ready; ``Sandbox.create(pool=NAME)`` takes
    one."""

    def __init__(
        self,
        name: str,
        size: int,
        ready: int,
        spec: dict[str, Any],
        *,
        host: str | None = None,
        token: str | None = None,
        client: Client | None = None,
    ) -> None:
        self.name = name
        self.size = size
        #: How many sandboxes were ready when this was read.
        self.ready = ready
        self.spec = spec
        self._host, self._token, self._client = host, token, client

    def __repr__(self) -> str:
        return f"Pool({self.name!r}, size={self.size}, ready={self.ready})"

    @classmethod
    def _from_json(cls, obj: dict[str, Any], host: str | None, token: str | None, client: Client | None) -> Pool:
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
    def create(
        cls,
        name: str,
        size: int,
        spec: SandboxSpec | None = None,
        *,
        host: str | None = None,
        token: str | None = None,
        client: Client | None = None,
    ) -> Pool:
        """Creates the pool; the daemon fills it in the background."""
        body = {"name": name, "size": size, "sandbox": _core.spec_body(spec or {})}
        with _connection(client, host, token) as conn:
            return cls._from_json(conn.request("POST", "/v1/pools", json=body).json(), host, token, client)

    @classmethod
    def list(
        cls, *, host: str | None = None, token: str | None = None, client: Client | None = None
    ) -> builtins.list[Pool]:
        with _connection(client, host, token) as conn:
            pools = conn.request("GET", "/v1/pools").json()["pools"]
            return [cls._from_json(p, host, token, client) for p in pools]

    def delete(self) -> None:
        """Removes the pool and the sandboxes waiting in it (those already taken stay)."""
        with _connection(self._client, self._host, self._token) as conn:
            conn.request("DELETE", _core.pool_path(self.name))
