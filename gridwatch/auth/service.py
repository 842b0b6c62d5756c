"""`Auth`: logins, sessions, API tokens and first-run setup, over the metadata database.

One `Auth` per app (`app.state.auth`, made by `gridwatch.auth.login.install_auth`); the CLI makes its own.
HTTP is not its business: the routes (`login`) and dependencies (`deps`) turn its answers and exceptions into
responses. The clocks and the password hasher can be injected (tests use a fake clock and cheap parameters).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property

from argon2 import PasswordHasher

from gridwatch.auth.passwords import (
    check_policy,
    default_hasher,
    hash_password,
    needs_rehash,
    verify_password,
)
from gridwatch.auth.principal import Principal
from gridwatch.auth.ratelimit import LoginLimiter
from gridwatch.auth.tokens import (
    api_token_prefix,
    looks_like_session_token,
    new_api_token,
    new_csrf_token,
    new_session_token,
    same,
    token_hash,
)
from storage.metadata import ApiTokenRecord, MetadataDB, SessionRecord, UserRecord

log = logging.getLogger("gridwatch.auth")
MAX_TOKEN_DAYS = 3650


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    idle_timeout: timedelta = timedelta(hours=12)  # a session not used for this long ends
    session_lifetime: timedelta = timedelta(days=7)  # and every session ends this long after the login
    touch_every: timedelta = timedelta(minutes=1)  # last_seen_at / last_used_at written at most this often
    failures_per_user: int = 5  # failed logins per username within failure_window_s, then 429
    failures_per_ip: int = 20  # per client IP
    failure_window_s: float = 300.0
    secure_cookies: bool = False  # the cookie's Secure flag even on plain-http requests (TLS at a proxy)
    public_origin: str | None = None  # e.g. https://gridwatch.example: an Origin accepted besides our own


class LoginFailed(Exception):
    """Unknown user, wrong password or disabled user: one answer for all three."""


class RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed attempts; retry in {retry_after:.0f} s")
        self.retry_after = retry_after


class SetupClosed(Exception):
    """First-run setup is over (an admin exists) or was never opened in this process."""


class WrongSetupToken(Exception):
    pass


class UserExists(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class LoginResult:
    user: UserRecord
    session: SessionRecord
    session_token: str = field(repr=False)  # the cookie's value, never stored


def utcnow() -> datetime:
    return datetime.now(UTC)


class Auth:
    def __init__(
        self,
        db: MetadataDB,
        *,
        policy: AuthPolicy | None = None,
        hasher: PasswordHasher | None = None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.policy = policy or AuthPolicy()
        self.hasher = hasher or default_hasher()
        self.now = clock
        self.limiter = LoginLimiter(
            per_user=self.policy.failures_per_user,
            per_ip=self.policy.failures_per_ip,
            window_s=self.policy.failure_window_s,
            clock=monotonic,
        )
        self._setup_hash: str | None = None
        self._setup_lock = threading.Lock()

    @cached_property
    def _dummy_hash(self) -> str:
        """A hash of nothing anyone knows: unknown users are checked against it, so they take as long."""
        return self.hasher.hash(secrets.token_urlsafe(16))

    # -- passwords --------------------------------------------------------------------------------

    def set_password(self, user_id: str, password: str) -> None:
        """Check the policy (WeakPassword), store the new hash and end the user's sessions (KeyError if
        there is no such user)."""
        check_policy(password, user_id)
        self.db.set_password_hash(user_id, hash_password(password, self.hasher))
        self.db.delete_sessions_of_user(user_id)

    def hash_new_password(self, password: str, username: str) -> str:
        check_policy(password, username)
        return hash_password(password, self.hasher)

    # -- logins and sessions ----------------------------------------------------------------------

    def login(self, username: str, password: str, *, ip: str | None, user_agent: str | None) -> LoginResult:
        """A session for the user, or LoginFailed / RateLimited. Unknown users are checked against a dummy
        hash so that every failure takes the time of a real check."""
        wait = self.limiter.retry_after(username, ip)
        if wait > 0:
            log.warning("login refused: too many failed attempts (client %s)", ip)
            raise RateLimited(wait)
        user = self.db.get_user(username) if 0 < len(username) <= 128 else None
        if user is None or user.password_hash is None:
            verify_password(self._dummy_hash, password, self.hasher)
            ok = False
        else:
            ok = verify_password(user.password_hash, password, self.hasher)
        if not ok or user is None or user.disabled:
            self.limiter.failed(username, ip)
            # the name typed is logged only when it is a user's: people type passwords into the wrong field
            who = repr(user.id) if user is not None else "an unknown user"
            log.warning("failed login for %s from %s", who, ip)
            raise LoginFailed
        assert user.password_hash is not None
        if needs_rehash(user.password_hash, self.hasher):
            self.db.set_password_hash(user.id, hash_password(password, self.hasher))
            log.info("password hash of %r upgraded to the current parameters", user.id)
        self.limiter.succeeded(username)
        now = self.now()
        self.db.delete_expired_sessions(now=now, idle_before=now - self.policy.idle_timeout)
        token = new_session_token()
        session = self.db.create_session(
            session_id=token_hash(token),
            user_id=user.id,
            csrf_token=new_csrf_token(),
            expires_at=now + self.policy.session_lifetime,
            user_agent=user_agent,
            ip=ip,
            at=now,
        )
        log.info("user %r logged in from %s", user.id, ip)
        return LoginResult(user=user, session=session, session_token=token)

    def session_principal(self, token: str) -> Principal | None:
        """The principal of a session cookie's token; None when unknown, expired, idle or its user is
        disabled or gone. An expired or idle session is deleted."""
        if not looks_like_session_token(token):
            return None
        session_id = token_hash(token)
        session = self.db.get_session_by_hash(session_id)
        if session is None:
            return None
        now = self.now()
        if now >= session.expires_at or now - session.last_seen_at >= self.policy.idle_timeout:
            self.db.delete_session(session_id)
            return None
        user = self.db.get_user(session.user_id)
        if user is None or user.disabled:
            return None
        if now - session.last_seen_at >= self.policy.touch_every:
            self.db.touch_session(session_id, now)
        return Principal(
            user_id=user.id,
            role=user.role,
            team_id=user.team_id,
            via="session",
            session_id=session_id,
            csrf_token=session.csrf_token,
        )

    def logout(self, session_id: str) -> None:
        self.db.delete_session(session_id)

    # -- API tokens -------------------------------------------------------------------------------

    def token_principal(self, token: str) -> Principal | None:
        """The principal of an API token; None when malformed, unknown, revoked, expired, or its user is
        disabled or gone."""
        prefix = api_token_prefix(token)
        if prefix is None:
            return None
        digest = token_hash(token)
        record = self.db.get_api_token_by_hash(digest)
        if record is None or not same(record.token_hash, digest) or record.prefix != prefix:
            return None
        now = self.now()
        if record.revoked_at is not None or (record.expires_at is not None and now >= record.expires_at):
            return None
        user = self.db.get_user(record.user_id)
        if user is None or user.disabled:
            return None
        if record.last_used_at is None or now - record.last_used_at >= self.policy.touch_every:
            self.db.touch_api_token(record.id, now)
        return Principal(user_id=user.id, role=user.role, team_id=user.team_id, via="token")

    def issue_api_token(
        self, user_id: str, name: str, *, expires_days: int | None = None
    ) -> tuple[str, ApiTokenRecord]:
        """A new token for the user: the token (to show once) and its record (which holds only its hash)."""
        if expires_days is not None and not 1 <= expires_days <= MAX_TOKEN_DAYS:
            raise ValueError(f"expires_days must be 1 to {MAX_TOKEN_DAYS}")
        now = self.now()
        new = new_api_token()
        record = self.db.create_api_token(
            user_id=user_id,
            name=name,
            token_hash=new.token_hash,
            prefix=new.prefix,
            expires_at=now + timedelta(days=expires_days) if expires_days else None,
            at=now,
        )
        return new.token, record

    # -- first-run setup --------------------------------------------------------------------------

    def open_setup(self) -> str | None:
        """While no admin can log in: a new random setup token (kept here only as its hash), returned for
        the caller to show once; None when an admin exists."""
        with self._setup_lock:
            if self.db.count_admins() > 0:
                self._setup_hash = None
                return None
            token = secrets.token_urlsafe(32)
            self._setup_hash = token_hash(token)
            return token

    def setup(
        self, setup_token: str, user_id: str, name: str, password: str, *, ip: str | None
    ) -> UserRecord:
        """Create the first admin. SetupClosed once an admin exists (or setup was not opened in this
        process), RateLimited after repeated wrong tokens, WrongSetupToken, UserExists, WeakPassword. A
        user of the config who is an admin without a password gets the password instead."""
        with self._setup_lock:
            if self.db.count_admins() > 0:
                raise SetupClosed("an admin exists: setup is done")
            if self._setup_hash is None:
                raise SetupClosed("setup is closed in this process; restart it for a new setup token")
            wait = self.limiter.retry_after(None, ip)
            if wait > 0:
                raise RateLimited(wait)
            if not same(token_hash(setup_token), self._setup_hash):
                self.limiter.failed(None, ip)
                log.warning("setup refused: wrong setup token (client %s)", ip)
                raise WrongSetupToken("wrong setup token")
            password_hash = self.hash_new_password(password, user_id)
            existing = self.db.get_user(user_id)
            if existing is None:
                user = self.db.create_user(
                    UserRecord(user_id, name, "admin", None, password_hash, created_at=self.now())
                )
            elif existing.role == "admin" and existing.password_hash is None:
                self.db.set_password_hash(user_id, password_hash)
                self.db.set_user_disabled(user_id, False)
                user = existing
            else:
                raise UserExists(f"user {user_id!r} exists; choose another id")
            self._setup_hash = None
            self.db.add_audit(user_id, "user.setup", f"user:{user_id}", {"role": "admin"})
            log.warning("first admin %r set up; setup is closed", user_id)
            return user
