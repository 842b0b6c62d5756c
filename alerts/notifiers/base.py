"""What every notifier shares: the notification value, the two delivery errors and the `Notifier` interface.

A notifier makes one delivery attempt per `send()`; retrying is `retry.deliver`'s job. `send()` returns on
success and raises `RetryableDeliveryError` (try again later) or `PermanentDeliveryError` (do not) otherwise.
Error texts never contain secrets: notifiers redact them before raising.
"""

from __future__ import annotations

import dataclasses
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Self
from urllib.parse import quote, quote_plus

KINDS = ("new", "update", "escalation", "resolved")
SEVERITIES = ("low", "normal", "high", "critical")  # in rising order
CHANNELS = ("webhook", "wecom", "dingtalk", "mqtt", "webpush")
SECRET_QUERY_KEYS = (
    "key",
    "access_token",
    "token",
    "sign",
    "secret",
    "password",
    "signature",
    "sig",
    "apikey",
)
_SECRET_QUERY = re.compile(r"(?i)([?&](?:" + "|".join(SECRET_QUERY_KEYS) + r")=)[^&#\s'\"]*")
_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@/\s]*@")


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with the given secret values (also URL-encoded) and any secret-looking URL query values or URL
    passwords replaced by ***."""
    for secret in secrets:
        if secret:
            for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
                text = text.replace(form, "***")
    text = _SECRET_QUERY.sub(r"\1***", text)
    return _USERINFO.sub(r"\1***@", text)


def severity_rank(severity: str) -> int:
    """0 for "low" up to 3 for "critical"; an unknown severity ranks highest (it is never filtered out)."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        return len(SEVERITIES) - 1


@dataclass(frozen=True, slots=True)
class Notification:
    """One message about an incident, the same for every channel; each notifier formats it its own way."""

    dedupe_key: str  # unique per notification (e.g. "inc-…:new"), sent along so that receivers can dedupe
    kind: str  # "new" | "update" | "escalation" | "resolved"
    incident_id: str
    alert_id: str
    severity: str  # "critical" | "high" | "normal" | "low"
    label: str
    score: float
    camera_id: str
    camera_name: str
    village: str
    grid: str
    team: str | None
    title: str
    body: str
    created_at: str  # ISO 8601 UTC
    snapshot_url: str | None = None
    url: str | None = None  # link to the alert in the web UI

    def as_json(self) -> dict[str, object]:
        """All fields as a JSON-ready dict (the wire form for webhooks and MQTT)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


class DeliveryError(Exception):
    """Base of the delivery errors; `status` is the HTTP status where there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class RetryableDeliveryError(DeliveryError):
    """The receiver may accept it later: 5xx, 429, timeouts, network errors, no MQTT connection."""

    def __init__(self, message: str, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message, status)
        self.retry_after_s = retry_after_s


class PermanentDeliveryError(DeliveryError):
    """Sending the same notification again will fail again. `gone`: the target no longer exists (a push
    subscription answered 404/410) and should be removed."""

    def __init__(self, message: str, status: int | None = None, gone: bool = False) -> None:
        super().__init__(message, status)
        self.gone = gone


class Notifier(ABC):
    """One configured delivery channel. Thread safety: `send()` may be called from one thread at a time."""

    channel: ClassVar[str]  # "webhook" | "wecom" | "dingtalk" | "mqtt" | "webpush"

    def __init__(self, name: str, secrets: Iterable[str | None] = ()) -> None:
        self.name = name  # the instance name from the config
        self._secrets = tuple(s for s in secrets if s)

    def redact(self, text: str) -> str:
        """`text` safe to log: this notifier's secrets and any secret-looking URL parts replaced by ***."""
        return redact(text, self._secrets)

    @abstractmethod
    def send(self, notification: Notification, target: str | None = None) -> None:
        """Deliver once. `target` is channel-specific (Web Push: the subscription JSON); others ignore it."""

    def close(self) -> None:  # noqa: B027 - most notifiers hold something to release, not all
        """Release connections; the notifier is not used afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
