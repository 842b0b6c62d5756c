"""What the metadata database refuses before it writes: naive datetimes, unknown choices, secrets
(camera passwords, credential URLs, secret-named audit keys, clear passwords), over-long errors."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from storage.metadata.records import ClipFacts, utcnow, values_of

_MAX_ERROR_CHARS = 2000
_MAX_PAGE = 1000
_SHA256 = re.compile(r"[0-9a-f]{64}")
# PHC / modular crypt: $argon2id$..., $2b$..., $scrypt$...
_PASSWORD_HASH = re.compile(r"\$[A-Za-z0-9-]+\$\S+")
_SECRET_KEY = re.compile(r"password|passwd|secret|token|api[_-]?key|credential", re.IGNORECASE)


def facts_values(facts: ClipFacts) -> dict[str, Any]:
    require_aware(facts.started_at, "started_at")
    if not _SHA256.fullmatch(facts.sha256):
        raise ValueError(f"sha256 must be 64 lowercase hex digits, got {facts.sha256!r}")
    if facts.size_bytes < 0 or facts.duration_s < 0:
        raise ValueError(f"negative clip size or duration: {facts!r}")
    return values_of(facts)


def at_or_now(at: datetime | None) -> datetime:
    if at is None:
        return utcnow()
    require_aware(at, "at")
    return at


def check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise ValueError(f"{what} {value!r} not in {choices}")


def check_limit(limit: int) -> None:
    if not 1 <= limit <= _MAX_PAGE:
        raise ValueError(f"limit must be 1..{_MAX_PAGE}, got {limit}")


def require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} is a naive datetime: the metadata database needs timezone-aware datetimes")


def require_redacted(url: str) -> None:
    """A camera URL may keep its user name, not its password (ingest.urls.redact_url writes ***)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password not in (None, "", "***"):
        raise ValueError("camera URL carries a password: store ingest.urls.redact_url(url)")


def require_no_credentials(value: str, what: str) -> None:
    """Webhook, robot and push endpoint URLs carry their secret (key=..., a token in the path)."""
    if "://" in value:
        raise ValueError(f"{what} is a URL, which may carry credentials: store a name (team, notifier id)")


def require_no_secret_keys(details: Any, path: str = "details") -> None:
    if isinstance(details, dict):
        for key, value in details.items():
            if _SECRET_KEY.search(str(key)):
                raise ValueError(f"{path}[{key!r}]: secrets do not go into the audit log")
            require_no_secret_keys(value, f"{path}[{key!r}]")
    elif isinstance(details, list | tuple):
        for i, value in enumerate(details):
            require_no_secret_keys(value, f"{path}[{i}]")


def require_password_hash(value: str | None) -> None:
    if value is not None and (len(value) > 512 or not _PASSWORD_HASH.fullmatch(value)):
        raise ValueError("password_hash must be a PHC / modular-crypt hash ($argon2id$...), not a password")


def short_error(error: str | None) -> str | None:
    if error is None or len(error) <= _MAX_ERROR_CHARS:
        return error
    return error[: _MAX_ERROR_CHARS - 3] + "..."
