"""airlock: the Python client of ``airlock serve``, the daemon API of the airlock sandbox runtime.

>>> from airlock import Sandbox
>>> with Sandbox.create(workspace="/srv/project", timeout="10m") as sb:
...     result = sb.exec(["sh", "-c", "make test"])
...     print(result.exit_code, result.stdout)

The daemon: ``host=`` (``unix:///path/to/socket`` or ``http://host:port``), else ``AIRLOCK_HOST``, else the
daemon's default socket; a TCP daemon's token: ``token=``, else ``AIRLOCK_TOKEN``. :class:`AsyncSandbox` is the
same for asyncio.
"""

from ._async import AsyncClient, AsyncFiles, AsyncLineStream, AsyncPool, AsyncSandbox
from ._core import default_socket
from ._sync import Client, Files, LineStream, Pool, Sandbox
from .errors import (
    AirlockError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    InternalError,
    LimitExceeded,
    NotFound,
    SetupFailed,
    Unauthorized,
)
from .models import (
    Change,
    Checkpoint,
    Diff,
    DirEntry,
    Duration,
    ExecEvent,
    ExecExit,
    ExecResult,
    ExecStarted,
    ExecStderr,
    ExecStdout,
    Health,
    SandboxInfo,
    SandboxSpec,
    SandboxState,
)

__version__ = "0.1.0"

__all__ = [
    "AirlockError",
    "AsyncClient",
    "AsyncFiles",
    "AsyncLineStream",
    "AsyncPool",
    "AsyncSandbox",
    "BadRequest",
    "Change",
    "Checkpoint",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Diff",
    "DirEntry",
    "Duration",
    "ExecEvent",
    "ExecExit",
    "ExecResult",
    "ExecStarted",
    "ExecStderr",
    "ExecStdout",
    "Files",
    "Health",
    "InternalError",
    "LimitExceeded",
    "LineStream",
    "NotFound",
    "Pool",
    "Sandbox",
    "SandboxInfo",
    "SandboxSpec",
    "SandboxState",
    "SetupFailed",
    "Unauthorized",
    "default_socket",
]
