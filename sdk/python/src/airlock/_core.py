"""What the sync and async clients share: which daemon, how to reach it, and the request bodies."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from .models import Duration, SandboxSpec

#: The base URL of requests over a Unix socket (the host part is not used).
_UNIX_BASE_URL = "http://airlock"

#: No limit on an answer's time (an exec runs as long as its command), but on connecting.
DEFAULT_TIMEOUT = httpx.Timeout(None, connect=10.0)


def default_socket() -> str:
    """The socket ``airlock serve`` listens on by default for this user."""
    if os.geteuid() == 0:
        return "/run/airlock/airlock.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "airlock", "airlock.sock")
    return f"/tmp/airlock-{os.getuid()}/airlock.sock"


@dataclass(frozen=True)
class Endpoint:
    """A daemon: ``unix:///path`` or ``http(s)://host:port``, and the token to send it."""

    url: str
    socket_path: str | None
    base_url: str
    token: str | None

    @classmethod
    def resolve(cls, host: str | None, token: str | None) -> Endpoint:
        """``host`` (else ``AIRLOCK_HOST``, else the default socket) and ``token`` (else ``AIRLOCK_TOKEN``).

        A token goes over plain HTTP only to a loopback address unless ``AIRLOCK_TOKEN_INSECURE=1``, as with the
        CLI: elsewhere it would cross the network in the clear.
        """
        url = host or os.environ.get("AIRLOCK_HOST") or f"unix://{default_socket()}"
        if token is None:
            token = os.environ.get("AIRLOCK_TOKEN") or None
        if url.startswith("unix://"):
            path = url[len("unix://") :]
            if not path.startswith("/"):
                raise ValueError(f"{url}: a unix:// host names an absolute socket path (unix:///run/airlock.sock)")
            return cls(url=url, socket_path=path, base_url=_UNIX_BASE_URL, token=token)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"{url}: expected unix:///path/to/socket or http://host:port")
        if (
            token
            and parts.scheme == "http"
            and not _is_loopback(parts.hostname)
            and os.environ.get("AIRLOCK_TOKEN_INSECURE") != "1"
        ):
            raise ValueError(
                f"the token would go in the clear to {url} (not a loopback address); set AIRLOCK_TOKEN_INSECURE=1 "
                "to send it anyway, or reach the daemon through an SSH tunnel to its socket"
            )
        return cls(url=url, socket_path=None, base_url=url.rstrip("/"), token=token)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def _is_loopback(hostname: str) -> bool:
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(hostname, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses)


def sandbox_path(name: str, *rest: str) -> str:
    """``/v1/sandboxes/NAME[/REST...]`` with the name encoded as one path segment."""
    return "/".join(["/v1/sandboxes", quote(name, safe=""), *rest])


def pool_path(name: str) -> str:
    return "/v1/pools/" + quote(name, safe="")


def duration_text(value: Duration) -> str:
    """A duration as the daemon reads it: text as given, a number as seconds (fractions as milliseconds)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"a duration is text such as '30s' or a number of seconds, not {value!r}")
    if isinstance(value, int):
        return f"{value}s"
    return f"{round(value * 1000)}ms"


def spec_body(spec: SandboxSpec) -> dict[str, Any]:
    """A sandbox spec as the create body (a numeric ``timeout`` as the daemon's text)."""
    body: dict[str, Any] = dict(spec)
    if "timeout" in body:
        body["timeout"] = duration_text(spec["timeout"])
    return body


def exec_body(
    cmd: str | Sequence[str],
    env: Mapping[str, str] | None,
    cwd: str | None,
    stdin: str | None,
    timeout: Duration | None,
) -> dict[str, Any]:
    """The body of an exec. A string ``cmd`` runs with ``sh -c``."""
    argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
    body: dict[str, Any] = {"cmd": argv}
    if env:
        body["env"] = dict(env)
    if cwd is not None:
        body["cwd"] = cwd
    if stdin is not None:
        body["stdin"] = stdin
    if timeout is not None:
        body["timeout"] = duration_text(timeout)
    return body


def paths_body(paths: Sequence[str] | None, force: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if paths is not None:
        if isinstance(paths, str):
            raise TypeError("paths is a list of paths, not one string")
        body["paths"] = list(paths)
    if force:
        body["force"] = True
    return body


def file_params(path: str, mode: int | None = None) -> dict[str, str]:
    params = {"path": path}
    if mode is not None:
        params["mode"] = f"{mode:04o}"
    return params


def is_directory_listing(response: httpx.Response) -> bool:
    """Whether a files GET answered a directory's entries (JSON) rather than a file's bytes."""
    content_type: str = response.headers.get("content-type", "")
    return content_type.startswith("application/json")
