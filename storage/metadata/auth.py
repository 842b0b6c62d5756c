"""Users' credentials, login sessions and API tokens: the authentication part of `MetadataDB`.

Only hashes are stored: a session's id is the sha256 of its token (the cookie), an API token's `token_hash`
the sha256 of the token, a password an argon2id PHC string. Anything else where a hash belongs is refused,
so a caller cannot store a token by mistake. Hashing and checking are `gridwatch.auth`'s; this module keeps
the rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql import Executable

from storage.metadata.checks import at_or_now, check_choice, require_aware, require_password_hash
from storage.metadata.records import ROLES, UserRecord, new_id, values_of
from storage.metadata.rows import to_record
from storage.metadata.tables import ApiTokenRow, SessionRow, UserRow

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_PREFIX = re.compile(r"[0-9a-z]{8}")
_MAX_USER_AGENT = 256
_MAX_IP = 64


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: str  # sha256 hex of the session token
    user_id: str
    csrf_token: str = field(repr=False)
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime  # the absolute end; the idle timeout is counted from last_seen_at
    user_agent: str | None = None
    ip: str | None = None


@dataclass(frozen=True, slots=True)
class ApiTokenRecord:
    id: str
    user_id: str
    name: str
    token_hash: str = field(repr=False)  # sha256 hex of the token
    prefix: str  # the token's public part (`gwt_<prefix>_...`), for listing
    created_at: datetime
    last_used_at: datetime | None = None
    expires_at: datetime | None = None  # None: never
    revoked_at: datetime | None = None  # None: not revoked


def _require_sha256(value: str, what: str) -> None:
    if not _SHA256_HEX.fullmatch(value):
        raise ValueError(f"{what} must be the sha256 (64 lowercase hex digits) of the token, not the token")


class AuthStore:
    """Mixed into `MetadataDB` (which provides the session factory)."""

    _sessions: sessionmaker[Session]

    # -- users ------------------------------------------------------------------------------------

    def create_user(self, user: UserRecord) -> UserRecord:
        """Insert a new user; ValueError if the id is taken (unlike `upsert_users`, which overwrites)."""
        check_choice(user.role, ROLES, "role")
        require_aware(user.created_at, "created_at")
        require_password_hash(user.password_hash)
        try:
            with self._sessions.begin() as session:
                if session.get(UserRow, user.id) is not None:
                    raise ValueError(f"user {user.id!r} exists")
                session.add(UserRow(**values_of(user)))
        except IntegrityError:  # a team that does not exist, or the same id inserted meanwhile
            raise ValueError(f"user {user.id!r} exists, or its team does not") from None
        return user

    def set_password_hash(self, user_id: str, password_hash: str | None) -> None:
        """Replace the user's password hash (None: the user cannot log in with a password); KeyError if the
        user does not exist."""
        require_password_hash(password_hash)
        self._update_user(user_id, password_hash=password_hash)

    def set_user_disabled(self, user_id: str, disabled: bool) -> None:
        """Disable or enable a user; KeyError if the user does not exist. Its sessions stay in the table
        (the caller deletes them) but stop working while it is disabled, as do its API tokens."""
        self._update_user(user_id, disabled=disabled)

    def count_admins(self) -> int:
        """Admins who can log in: enabled and with a password. None of them: first-run setup is open."""
        query = (
            select(func.count())
            .select_from(UserRow)
            .where(UserRow.role == "admin", UserRow.disabled.is_(False), UserRow.password_hash.is_not(None))
        )
        with self._sessions() as session:
            return int(session.scalar(query) or 0)

    # -- sessions ---------------------------------------------------------------------------------

    def create_session(
        self,
        *,
        session_id: str,
        user_id: str,
        csrf_token: str,
        expires_at: datetime,
        user_agent: str | None = None,
        ip: str | None = None,
        at: datetime | None = None,
    ) -> SessionRecord:
        """`session_id` is the sha256 hex of the session token. The user agent and IP are cut short."""
        _require_sha256(session_id, "session_id")
        require_aware(expires_at, "expires_at")
        when = at_or_now(at)
        row = SessionRow(
            id=session_id,
            user_id=user_id,
            csrf_token=csrf_token,
            created_at=when,
            last_seen_at=when,
            expires_at=expires_at,
            user_agent=user_agent[:_MAX_USER_AGENT] if user_agent else None,
            ip=ip[:_MAX_IP] if ip else None,
        )
        with self._sessions.begin() as session:
            session.add(row)
        return to_record(SessionRecord, row)

    def get_session_by_hash(self, session_id: str) -> SessionRecord | None:
        if not _SHA256_HEX.fullmatch(session_id):
            return None
        with self._sessions() as session:
            row = session.get(SessionRow, session_id)
            return to_record(SessionRecord, row) if row is not None else None

    def touch_session(self, session_id: str, at: datetime) -> bool:
        """Move last_seen_at forward to `at` (never back); False if the session is gone or was seen later."""
        require_aware(at, "at")
        return self._changed(
            update(SessionRow)
            .where(SessionRow.id == session_id, SessionRow.last_seen_at < at)
            .values(last_seen_at=at)
        )

    def delete_session(self, session_id: str) -> bool:
        return self._changed(delete(SessionRow).where(SessionRow.id == session_id))

    def delete_sessions_of_user(self, user_id: str) -> int:
        """Log the user out everywhere (password changed, user disabled); how many sessions went."""
        return self._count(delete(SessionRow).where(SessionRow.user_id == user_id))

    def delete_expired_sessions(self, *, now: datetime, idle_before: datetime) -> int:
        """Sessions past their absolute end (`expires_at <= now`) or idle (last seen before `idle_before`)."""
        require_aware(now, "now")
        require_aware(idle_before, "idle_before")
        return self._count(
            delete(SessionRow).where(or_(SessionRow.expires_at <= now, SessionRow.last_seen_at < idle_before))
        )

    # -- API tokens -------------------------------------------------------------------------------

    def create_api_token(
        self,
        *,
        user_id: str,
        name: str,
        token_hash: str,
        prefix: str,
        expires_at: datetime | None = None,
        at: datetime | None = None,
    ) -> ApiTokenRecord:
        _require_sha256(token_hash, "token_hash")
        if not _PREFIX.fullmatch(prefix):
            raise ValueError("an API token's prefix is 8 characters of 0-9a-z")
        if not 1 <= len(name) <= 128:
            raise ValueError("an API token's name is 1 to 128 characters")
        if expires_at is not None:
            require_aware(expires_at, "expires_at")
        row = ApiTokenRow(
            id=new_id(),
            user_id=user_id,
            name=name,
            token_hash=token_hash,
            prefix=prefix,
            created_at=at_or_now(at),
            expires_at=expires_at,
        )
        with self._sessions.begin() as session:
            session.add(row)
        return to_record(ApiTokenRecord, row)

    def get_api_token(self, token_id: str) -> ApiTokenRecord | None:
        with self._sessions() as session:
            row = session.get(ApiTokenRow, token_id)
            return to_record(ApiTokenRecord, row) if row is not None else None

    def get_api_token_by_hash(self, token_hash: str) -> ApiTokenRecord | None:
        if not _SHA256_HEX.fullmatch(token_hash):
            return None
        with self._sessions() as session:
            row = session.scalars(select(ApiTokenRow).where(ApiTokenRow.token_hash == token_hash)).first()
            return to_record(ApiTokenRecord, row) if row is not None else None

    def list_api_tokens(self, user_id: str | None = None) -> list[ApiTokenRecord]:
        """The user's tokens (every user's with None), revoked ones too, oldest first."""
        query = select(ApiTokenRow).order_by(ApiTokenRow.created_at, ApiTokenRow.id)
        if user_id is not None:
            query = query.where(ApiTokenRow.user_id == user_id)
        with self._sessions() as session:
            return [to_record(ApiTokenRecord, r) for r in session.scalars(query)]

    def revoke_api_token(
        self, token_id: str, *, user_id: str | None = None, at: datetime | None = None
    ) -> ApiTokenRecord | None:
        """Revoke a token (of `user_id` only, when given); None if there is no such token. A token revoked
        before keeps its first revoked_at."""
        when = at_or_now(at)
        where = [ApiTokenRow.id == token_id]
        if user_id is not None:
            where.append(ApiTokenRow.user_id == user_id)
        with self._sessions.begin() as session:
            session.execute(
                update(ApiTokenRow).where(*where, ApiTokenRow.revoked_at.is_(None)).values(revoked_at=when),
                execution_options={"synchronize_session": False},
            )
            row = session.scalars(select(ApiTokenRow).where(*where)).first()
            return to_record(ApiTokenRecord, row) if row is not None else None

    def touch_api_token(self, token_id: str, at: datetime) -> bool:
        """Record a use at `at` (last_used_at only moves forward)."""
        require_aware(at, "at")
        return self._changed(
            update(ApiTokenRow)
            .where(
                ApiTokenRow.id == token_id,
                or_(ApiTokenRow.last_used_at.is_(None), ApiTokenRow.last_used_at < at),
            )
            .values(last_used_at=at)
        )

    # -- helpers ----------------------------------------------------------------------------------

    def _update_user(self, user_id: str, **values: object) -> None:
        if not self._changed(update(UserRow).where(UserRow.id == user_id).values(**values)):
            raise KeyError(f"no user {user_id!r}")

    def _count(self, statement: Executable) -> int:
        # A lone UPDATE or DELETE: on SQLite the write lock comes with the first statement (busy_timeout)
        with self._sessions.begin() as session:
            result = session.execute(statement, execution_options={"synchronize_session": False})
            return int(result.rowcount)  # type: ignore[attr-defined]

    def _changed(self, statement: Executable) -> bool:
        return self._count(statement) > 0
