"""Session and API tokens: random, handed to the user once, stored only as their sha256.

A session token is the `gw_session` cookie's value; the session's id in the database is its sha256. An API
token is `gwt_<prefix>_<secret>`: the 8-character prefix is public (it identifies the token in listings),
the secret is 32 random bytes. 256 random bits need no slow hash: sha256 of the whole token is what is kept.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

SESSION_COOKIE = "gw_session"
API_TOKEN_PREFIX = "gwt_"
_URLSAFE_32 = r"[A-Za-z0-9_-]{43}"  # secrets.token_urlsafe(32)
_SESSION_TOKEN = re.compile(_URLSAFE_32)
_API_TOKEN = re.compile(rf"gwt_([0-9a-f]{{8}})_{_URLSAFE_32}")


def token_hash(token: str) -> str:
    """The sha256 hex digest of a token: what the database keeps."""
    return hashlib.sha256(token.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time equality of two strings."""
    return hmac.compare_digest(a.encode(), b.encode())


def new_session_token() -> str:
    return secrets.token_urlsafe(32)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def looks_like_session_token(value: str) -> bool:
    return _SESSION_TOKEN.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class NewApiToken:
    token: str = field(repr=False)  # shown to its owner once
    prefix: str
    token_hash: str = field(repr=False)


def new_api_token() -> NewApiToken:
    prefix = secrets.token_hex(4)
    token = f"{API_TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return NewApiToken(token=token, prefix=prefix, token_hash=token_hash(token))


def api_token_prefix(token: str) -> str | None:
    """The prefix of a well-formed API token, None for anything else."""
    found = _API_TOKEN.fullmatch(token)
    return found.group(1) if found else None
