"""What went wrong with a camera connection, in words an admin can act on, without its password."""

from __future__ import annotations

import errno
import socket
import threading
from typing import Literal
from urllib.parse import urlsplit

import av

from ingest.urls import url_password

ErrorKind = Literal[
    "auth_failed", "unreachable", "timeout", "no_video", "unsupported", "refused_url", "error"
]

_UNREACHABLE_ERRNOS = {
    errno.ECONNREFUSED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EHOSTDOWN,
    errno.ENETDOWN,
}
# A failed open that took this close to the open timeout is FFmpeg giving up on a silent server (it reports
# that as "Invalid data found", not as a timeout).
_TIMEOUT_SLACK_S = 0.1


def classify_open_error(
    exc: BaseException, url: str, elapsed_s: float, timeout_s: float
) -> tuple[ErrorKind, str]:
    """Map an `av.open` failure to an error kind and a message for an admin (not yet redacted)."""
    detail = describe_error(exc)
    code = getattr(exc, "errno", None)
    if isinstance(exc, av.error.HTTPUnauthorizedError | av.error.HTTPForbiddenError) or " 401 " in f" {exc} ":
        return "auth_failed", f"the camera refused the credentials ({detail}); check user name and password"
    if isinstance(exc, av.error.ExitError | TimeoutError) or code == errno.ETIMEDOUT:
        return "timeout", f"no answer within the open timeout of {timeout_s:g} s ({detail})"
    if code in _UNREACHABLE_ERRNOS:
        return "unreachable", f"cannot connect to the camera ({detail})"
    if isinstance(exc, av.error.HTTPNotFoundError):
        return "error", f"the camera has no stream at this path ({detail})"
    if isinstance(exc, av.error.DecoderNotFoundError | av.error.DemuxerNotFoundError):
        return "unsupported", f"FFmpeg cannot read this stream ({detail})"
    if elapsed_s >= timeout_s - _TIMEOUT_SLACK_S:
        return "timeout", f"no usable answer within the open timeout of {timeout_s:g} s ({detail})"
    host = urlsplit(url).hostname or ""
    if code == errno.EIO and host and not _resolves(host, timeout_s):
        return "unreachable", f"cannot resolve host name {host!r} ({detail})"
    return "error", detail


def describe_error(exc: BaseException) -> str:
    """Exception text without the file name PyAV appends (the URL); callers still redact it."""
    text = getattr(exc, "strerror", None) or str(exc) or "no details"
    return f"{type(exc).__name__}: {text}"


def _resolves(host: str, timeout_s: float) -> bool:
    """Whether the host name resolves, waiting at most `timeout_s` (getaddrinfo itself has no timeout)."""
    outcome: list[bool] = []

    def resolve() -> None:
        try:
            socket.getaddrinfo(host, None)
            outcome.append(True)
        except OSError:
            outcome.append(False)

    worker = threading.Thread(target=resolve, name="probe-resolve", daemon=True)
    worker.start()
    worker.join(timeout_s)
    return outcome[0] if outcome else True  # still resolving: not proven unresolvable


def url_secrets(url: str) -> tuple[str, ...]:
    """The password as decoded and as written in the URL, so both forms are redacted."""
    try:
        written = urlsplit(url).password or ""
    except ValueError:
        written = ""
    return tuple(s for s in {url_password(url) or "", written} if s)
