"""Generic webhook: the notification as a JSON POST, signed so that the receiver can trust and dedupe it.

Headers sent with every POST:
- `X-GridWatch-Timestamp`: unix seconds at signing time;
- `X-GridWatch-Signature`: `sha256=` + hex HMAC-SHA256 of `f"{timestamp}.{body}"` with the shared secret
  (omitted when no secret is configured);
- `X-GridWatch-Delivery`: the notification's dedupe key (the same on every retry of one notification).
Receivers verify with `verify_signature` (or the same in their language) and drop repeated delivery keys.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from urllib.parse import quote

from alerts.notifiers.base import Notification, Notifier
from alerts.notifiers.transport import HttpPoster, describe_url

TIMESTAMP_HEADER = "X-GridWatch-Timestamp"
SIGNATURE_HEADER = "X-GridWatch-Signature"
DELIVERY_HEADER = "X-GridWatch-Delivery"


def sign(secret: str | bytes, timestamp: int | str, body: bytes | str) -> str:
    """The `X-GridWatch-Signature` value for a body sent at `timestamp`."""
    key = secret.encode() if isinstance(secret, str) else secret
    payload = body.encode() if isinstance(body, str) else body
    digest = hmac.new(key, f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def header_value(text: str) -> str:
    """`text` as a safe HTTP header value: printable ASCII stays, anything else is percent-encoded."""
    if text.isascii() and text.isprintable():
        return text
    return quote(text, safe="")


def verify_signature(
    secret: str | bytes,
    timestamp: str | int | None,
    body: bytes | str,
    signature: str | None,
    tolerance_s: float = 300,
    now: float | None = None,
) -> bool:
    """True when `signature` is the sender's signature of `body` at `timestamp` and that timestamp is within
    `tolerance_s` of `now` (default: the current time). Compares in constant time."""
    if timestamp is None or signature is None:
        return False
    try:
        sent_at = int(str(timestamp).strip())
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_s:
        return False
    expected = sign(secret, sent_at, body)
    return hmac.compare_digest(expected.encode(), signature.strip().encode())


class WebhookNotifier(Notifier):
    channel = "webhook"

    def __init__(
        self,
        name: str,
        url: str,
        secret: str | None = None,
        timeout_s: float = 10.0,
        headers: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name, secrets=[secret])
        self._url = url
        self._secret = secret
        self._headers = dict(headers or {})
        self._clock = clock
        self._http = HttpPoster(timeout_s, secrets=[secret])
        self._what = f"webhook {name!r} ({describe_url(url)})"

    def send(self, notification: Notification, target: str | None = None) -> None:
        body = json.dumps(notification.as_json(), ensure_ascii=False, separators=(",", ":")).encode()
        timestamp = int(self._clock())
        headers = {
            **self._headers,
            "Content-Type": "application/json; charset=utf-8",
            TIMESTAMP_HEADER: str(timestamp),
            DELIVERY_HEADER: header_value(notification.dedupe_key),
        }
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        self._http.post(self._url, body, headers, self._what)

    def close(self) -> None:
        self._http.close()
