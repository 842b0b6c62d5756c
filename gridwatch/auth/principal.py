"""Who a request is from, as the authentication dependencies hand it to routes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    role: str  # admin | operator | patrol
    team_id: str | None
    via: str  # "session" | "token"
    session_id: str | None = None  # the session's id (hash), for logout
    csrf_token: str | None = None  # sessions only
