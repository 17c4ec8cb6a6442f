"""What the daemon answers, typed: sandboxes, exec results and events, files, diffs, checkpoints, pools."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

#: A duration: the daemon's text (``"30s"``, ``"5m"``, ``"1.5h"``, ``"250ms"``) or a number of seconds.
Duration = str | int | float


class SandboxSpec(TypedDict, total=False):
    """The body of a create (and a pool's ``sandbox``): the meanings of ``airlock create``'s flags."""

    name: str
    profile: str
    image: str
    rootfs: str
    workspace: str
    workspace_mode: Literal["cow", "rw", "ro"]
    net: Literal["none", "allow", "host"]
    allow: list[str]
    env: dict[str, str]
    memory: int | str
    pids: int
    cpus: float | str
    disk: int | str
    timeout: Duration
    pool: str


SandboxState = Literal["creating", "running", "exited"]


@dataclass(frozen=True)
class Health:
    version: str
    sandboxes: int


@dataclass(frozen=True)
class SandboxInfo:
    """A sandbox as the daemon describes it (``GET /v1/sandboxes/{name}``)."""

    name: str
    state: SandboxState
    created: float | None = None
    workspace: str | None = None
    workspace_mode: str | None = None
    exit_code: int | None = None
    #: Unix time when the sandbox's lifetime ends (then the daemon stops it), if it has one.
    expires_at: float | None = None
    spec: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> SandboxInfo:
        return cls(
            name=obj["name"],
            state=obj["state"],
            created=obj.get("created"),
            workspace=obj.get("workspace"),
            workspace_mode=obj.get("workspace_mode"),
            exit_code=obj.get("exit_code"),
            expires_at=obj.get("expires_at"),
            spec=obj.get("spec") or {},
        )


def _output(obj: dict[str, Any], key: str) -> tuple[str, bytes]:
    """An output's text and exact bytes: ``key`` when it was UTF-8, else ``key_b64`` (text then decoded with
    replacement characters)."""
    encoded = obj.get(f"{key}_b64")
    if isinstance(encoded, str):
        raw = base64.b64decode(encoded)
        return raw.decode("utf-8", "replace"), raw
    text = str(obj.get(key) or "")
    return text, text.encode()


@dataclass(frozen=True)
class ExecResult:
    """A finished command. ``stdout``/``stderr`` are text; ``stdout_bytes``/``stderr_bytes`` the exact bytes
    (different only when the output was not UTF-8)."""

    exit_code: int
    stdout: str
    stderr: str
    stdout_bytes: bytes
    stderr_bytes: bytes
    duration_ms: int
    #: The exec's own ``timeout`` ran out (the command was killed; exit code 124).
    timed_out: bool
    #: Output beyond the daemon's capture limit (16 MiB per stream) was dropped.
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ExecResult:
        stdout, stdout_bytes = _output(obj, "stdout")
        stderr, stderr_bytes = _output(obj, "stderr")
        return cls(
            exit_code=int(obj["exit_code"]),
            stdout=stdout,
            stderr=stderr,
            stdout_bytes=stdout_bytes,
            stderr_bytes=stderr_bytes,
            duration_ms=int(obj.get("duration_ms", 0)),
            timed_out=bool(obj.get("timed_out", False)),
            truncated=bool(obj.get("truncated", False)),
        )


@dataclass(frozen=True)
class ExecStarted:
    """The command started; ``pid`` is its ``airlock exec`` process on the daemon's host."""

    pid: int | None
    type: Literal["started"] = "started"


@dataclass(frozen=True)
class ExecStdout:
    """Output the command wrote on its stdout: ``text``, and ``data`` its exact bytes."""

    text: str
    data: bytes
    type: Literal["stdout"] = "stdout"


@dataclass(frozen=True)
class ExecStderr:
    """Output the command wrote on its stderr: ``text``, and ``data`` its exact bytes."""

    text: str
    data: bytes
    type: Literal["stderr"] = "stderr"


@dataclass(frozen=True)
class ExecExit:
    """The command ended: the last event of a stream."""

    exit_code: int
    timed_out: bool
    duration_ms: int
    type: Literal["exit"] = "exit"


ExecEvent = ExecStarted | ExecStdout | ExecStderr | ExecExit


def exec_event(obj: dict[str, Any]) -> ExecEvent:
    """One line of a streamed exec as its event."""
    kind = obj.get("type")
    if kind == "started":
        return ExecStarted(pid=obj.get("pid"))
    if kind == "stdout":
        text, data = _output(obj, "data")
        return ExecStdout(text=text, data=data)
    if kind == "stderr":
        text, data = _output(obj, "data")
        return ExecStderr(text=text, data=data)
    if kind == "exit":
        return ExecExit(
            exit_code=int(obj["exit_code"]),
            timed_out=bool(obj.get("timed_out", False)),
            duration_ms=int(obj.get("duration_ms", 0)),
        )
    raise ValueError(f"unknown exec event {obj!r}")


@dataclass(frozen=True)
class DirEntry:
    """One entry of a directory inside a sandbox; ``mode`` is its permission bits."""

    name: str
    type: Literal["file", "dir", "symlink", "other"]
    size: int
    mode: int

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> DirEntry:
        return cls(name=obj["name"], type=obj["type"], size=int(obj["size"]), mode=int(obj["mode"]))


@dataclass(frozen=True)
class Change:
    """One changed path of a copy-on-write workspace (``airlock diff --json``), relative to the workspace."""

    path: str
    kind: Literal["added", "modified", "deleted", "type_changed"]
    old_type: str | None = None
    new_type: str | None = None
    mode: int | None = None
    old_mode: int | None = None
    size: int | None = None
    old_hash: str | None = None
    new_hash: str | None = None

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Change:
        return cls(
            path=obj["path"],
            kind=obj["kind"],
            old_type=obj.get("old_type"),
            new_type=obj.get("new_type"),
            mode=obj.get("mode"),
            old_mode=obj.get("old_mode"),
            size=obj.get("size"),
            old_hash=obj.get("old_hash"),
            new_hash=obj.get("new_hash"),
        )


@dataclass(frozen=True)
class Diff:
    """The changes a sandbox made to its copy-on-write workspace, not yet committed."""

    name: str
    workspace: str | None
    changes: list[Change]

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Diff:
        return cls(
            name=obj.get("name", ""),
            workspace=obj.get("workspace"),
            changes=[Change.from_json(c) for c in obj.get("changes") or []],
        )


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint of a sandbox's layer: its label, when it was made, how many changes it holds."""

    label: str
    created: float | None = None
    changes: int | None = None

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Checkpoint:
        return cls(label=obj["label"], created=obj.get("created"), changes=obj.get("changes"))
