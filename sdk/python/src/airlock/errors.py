"""The daemon's error answers as exceptions: one class per error code of the API.

An error answer is an HTTP status and ``{"error": {"code": "...", "message": "...", "details": {...}}}``;
``details`` (a refused commit's ``conflicts``) is :attr:`AirlockError.details`.
"""

from __future__ import annotations

import json
from typing import Any


class AirlockError(Exception):
    """An error from the airlock daemon (or from reaching it).

    ``code`` is the API's error code (``not_found``, ``conflict``, ...), ``message`` its one-line message,
    ``status`` the HTTP status (``None`` when no answer came), ``details`` more about it (``{}`` when none).
    """

    code: str = "error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.status = status
        self.details: dict[str, Any] = details or {}

    def __str__(self) -> str:
        if self.status is None:
            return f"{self.code}: {self.message}"
        return f"{self.code} ({self.status}): {self.message}"


class BadRequest(AirlockError):
    """400: the request was malformed (a bad field, path, label, duration...)."""

    code = "bad_request"


class Unauthorized(AirlockError):
    """401: a TCP daemon's token is missing or wrong."""

    code = "unauthorized"


class NotFound(AirlockError):
    """404: no such sandbox, file, checkpoint or pool."""

    code = "not_found"


class Conflict(AirlockError):
    """409: the sandbox's state forbids it now (exists already, not running, busy, a commit's conflicts)."""

    code = "conflict"


class SetupFailed(AirlockError):
    """422: the sandbox could not be set up (a protection this host cannot apply, a missing directory)."""

    code = "setup_failed"


class LimitExceeded(AirlockError):
    """429: the daemon runs as many sandboxes or execs as it may."""

    code = "limit"


class InternalError(AirlockError):
    """500: the daemon failed."""

    code = "internal"


class ConnectionFailed(AirlockError):
    """The daemon could not be reached, or the connection broke before an answer came."""

    code = "connection_failed"


_BY_CODE: dict[str, type[AirlockError]] = {
    cls.code: cls for cls in (BadRequest, Unauthorized, NotFound, Conflict, SetupFailed, LimitExceeded, InternalError)
}

_BY_STATUS: dict[int, type[AirlockError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    422: SetupFailed,
    429: LimitExceeded,
    500: InternalError,
}


def error_from_answer(status: int, body: bytes) -> AirlockError:
    """The exception for an error answer: by the body's ``error.code``, else by the HTTP status."""
    error: Any = None
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        pass
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        code: str = error["code"]
        message = str(error.get("message") or f"the daemon answered {status}")
        details = error.get("details")
        cls = _BY_CODE.get(code, AirlockError)
        return cls(message, code=code, status=status, details=details if isinstance(details, dict) else None)
    text = body.decode("utf-8", "replace").strip()
    cls = _BY_STATUS.get(status, InternalError if status >= 500 else AirlockError)
    message = f"the daemon answered {status}: {text[:500]}" if text else f"the daemon answered {status}"
    return cls(message, status=status)
