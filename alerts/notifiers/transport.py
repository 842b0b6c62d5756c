"""HTTP for the notifiers, in one place: posting with timeouts, classifying answers, keeping secrets out.

Classification: 2xx ok; 5xx, 408, 429, timeouts and network errors retryable (with the server's Retry-After,
seconds or an HTTP date); every other status permanent. Robot APIs (WeCom, DingTalk) answer 200 with an
`errcode` in JSON: their modules map those codes with `raise_for_errcode`.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import time
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC
from urllib.parse import urlsplit

import httpx

from alerts.notifiers.base import PermanentDeliveryError, RetryableDeliveryError, redact

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 429})
__all__ = [
    "HttpPoster",
    "describe_url",
    "parse_retry_after",
    "raise_for_errcode",
    "raise_for_http_status",
    "redact",
]


def describe_url(url: str, with_path: bool = False) -> str:
    """scheme://host[:port] (and the path if asked): a URL as it may appear in logs and errors."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path if with_path else ''}"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or an HTTP date); None if absent or invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    return max(0.0, seconds) if math.isfinite(seconds) else None


def raise_for_http_status(
    status: int,
    what: str,
    headers: Mapping[str, str] | None = None,
    gone_statuses: Collection[int] = (),
) -> None:
    """Return for 2xx, else raise the matching delivery error. `what` names the receiver (no secrets)."""
    if 200 <= status < 300:
        return
    if status >= 500 or status in RETRYABLE_STATUSES:
        retry_after = parse_retry_after((headers or {}).get("retry-after"))
        raise RetryableDeliveryError(f"{what}: HTTP {status}", status=status, retry_after_s=retry_after)
    gone = status in gone_statuses
    raise PermanentDeliveryError(
        f"{what}: HTTP {status}{' (gone)' if gone else ''}", status=status, gone=gone
    )


def raise_for_errcode(
    body: bytes, what: str, retryable_codes: Collection[int], secrets: Iterable[str | None] = ()
) -> None:
    """For robot APIs that answer 200 with {"errcode": N, "errmsg": "..."}: 0 is ok, `retryable_codes` (rate
    limits, "system busy") are retryable, other codes permanent. An unreadable answer is retryable: the
    robot may or may not have posted the message, and the dedupe key is not visible to a group chat."""
    try:
        answer = json.loads(body)
        errcode = int(answer["errcode"])
    except (ValueError, KeyError, TypeError):
        raise RetryableDeliveryError(f"{what}: unreadable answer", status=200) from None
    if errcode == 0:
        return
    errmsg = redact(str(answer.get("errmsg", ""))[:200], secrets)
    text = f"{what}: errcode {errcode} {errmsg}".rstrip()
    if errcode in retryable_codes:
        raise RetryableDeliveryError(text, status=200)
    raise PermanentDeliveryError(text, status=200)


class _RedactHttpxLog(logging.Filter):
    """httpx logs every request line with its full URL at INFO; robot URLs carry their key in the query."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


def _install_httpx_log_redaction() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactHttpxLog) for f in logger.filters):
        logger.addFilter(_RedactHttpxLog())


_install_httpx_log_redaction()


class HttpPoster:
    """One pooled httpx client with timeouts; turns transport failures and statuses into delivery errors."""

    def __init__(self, timeout_s: float = 10.0, secrets: Iterable[str | None] = ()) -> None:
        self._secrets = [s for s in secrets if s]
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            follow_redirects=False,
            headers={"User-Agent": "GridWatch-notifier/1"},
        )

    def post(self, url: str, content: bytes, headers: Mapping[str, str], what: str) -> httpx.Response:
        """POST and return a 2xx response, or raise Retryable/PermanentDeliveryError."""
        try:
            response = self._client.post(url, content=content, headers=dict(headers))
        except httpx.TimeoutException as exc:
            raise RetryableDeliveryError(f"{what}: timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            detail = redact(str(exc), self._secrets) or type(exc).__name__
            raise RetryableDeliveryError(f"{what}: {detail}") from None
        raise_for_http_status(response.status_code, what, response.headers)
        return response

    def close(self) -> None:
        self._client.close()
