"""HTTP routes of authentication: login and logout, who am I, API tokens, first-run setup.

`install_auth(app, state)` puts an `Auth` in `app.state.auth`, adds these routes and, while no admin can log
in, opens first-run setup: a random setup token, logged once at WARNING with how to finish setup.
Failed-login limits are counted in this process (see `ratelimit`). A validation error of these routes never
echoes what was sent (a password could be in it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from gridwatch.api_state import AppState
from gridwatch.auth.deps import (
    CurrentPrincipal,
    OptionalPrincipal,
    auth_of,
    check_same_origin,
    clear_cookie_header,
    cookie_secure,
)
from gridwatch.auth.passwords import MAX_LENGTH, WeakPassword
from gridwatch.auth.service import (
    MAX_TOKEN_DAYS,
    Auth,
    AuthPolicy,
    LoginFailed,
    RateLimited,
    SetupClosed,
    UserExists,
    WrongSetupToken,
)
from gridwatch.auth.tokens import SESSION_COOKIE, token_hash
from storage.metadata import ApiTokenRecord

log = logging.getLogger("gridwatch.auth")
WRONG_LOGIN = "wrong username or password"


class _NoEchoRoute(APIRoute):
    """Validation errors without the `input` that pydantic puts in them (it would send passwords back)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                errors = [{k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in exc.errors()]
                raise RequestValidationError(errors) from None

        return route


router = APIRouter(prefix="/api/v1", tags=["auth"], route_class=_NoEchoRoute)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginIn(_In):
    username: str = Field(..., min_length=1, max_length=128, description="The user id")
    password: str = Field(..., min_length=1, max_length=MAX_LENGTH)


class SessionOut(BaseModel):
    user_id: str
    name: str
    role: str
    team_id: str | None
    csrf_token: str | None = Field(None, description="Send it as X-CSRF-Token with POST/PUT/PATCH/DELETE")
    via: str = "session"  # "session" or "token"


class TokenIn(_In):
    name: str = Field(..., min_length=1, max_length=128, description="What the token is for")
    expires_days: int | None = Field(None, ge=1, le=MAX_TOKEN_DAYS, description="Empty: never expires")


class TokenOut(BaseModel):
    id: str
    name: str
    prefix: str  # the token starts with gwt_<prefix>_
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class NewTokenOut(TokenOut):
    token: str = Field(..., description="Shown this once: keep it secret")


class SetupIn(_In):
    setup_token: str = Field(..., min_length=1, max_length=256, description="From the log of this start")
    user_id: str = Field(..., pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    name: str = Field(..., min_length=1, max_length=256)
    password: str = Field(..., min_length=1, max_length=MAX_LENGTH)


class UserOut(BaseModel):
    user_id: str
    name: str
    role: str


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _too_many(exc: RateLimited) -> HTTPException:
    return HTTPException(
        status_code=429,
        detail="too many failed attempts; try again later",
        headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))},
    )


def _token_out(record: ApiTokenRecord) -> TokenOut:
    return TokenOut(
        id=record.id,
        name=record.name,
        prefix=record.prefix,
        created_at=record.created_at,
        last_used_at=record.last_used_at,
        expires_at=record.expires_at,
        revoked_at=record.revoked_at,
    )


@router.post("/login", response_model=SessionOut)
def login(body: LoginIn, request: Request, response: Response) -> SessionOut:
    """Log in with user id and password: sets the `gw_session` cookie and returns the CSRF token."""
    auth = auth_of(request)
    check_same_origin(request, auth)
    try:
        done = auth.login(
            body.username,
            body.password,
            ip=_client_ip(request),
            user_agent=request.headers.get("user-agent"),
        )
    except RateLimited as exc:
        raise _too_many(exc) from None
    except LoginFailed:
        raise HTTPException(
            status_code=401, detail=WRONG_LOGIN, headers={"WWW-Authenticate": "Bearer"}
        ) from None
    previous = request.cookies.get(SESSION_COOKIE)
    if previous:  # a new login replaces the session this browser had
        auth.logout(token_hash(previous))
    response.set_cookie(
        SESSION_COOKIE,
        done.session_token,
        max_age=int(auth.policy.session_lifetime.total_seconds()),
        path="/",
        secure=cookie_secure(request, auth),
        httponly=True,
        samesite="strict",
    )
    response.headers["Cache-Control"] = "no-store"
    user = done.user
    return SessionOut(
        user_id=user.id,
        name=user.name,
        role=user.role,
        team_id=user.team_id,
        csrf_token=done.session.csrf_token,
    )


@router.post("/logout", status_code=204)
def logout(request: Request, principal: OptionalPrincipal) -> Response:
    """End this session (a cookie request needs its CSRF token) and clear the cookie."""
    auth = auth_of(request)
    if principal is not None and principal.session_id is not None:
        auth.logout(principal.session_id)
        log.info("user %r logged out", principal.user_id)
    response = Response(status_code=204)
    response.headers["Set-Cookie"] = clear_cookie_header(request, auth)
    return response


@router.get("/session", response_model=SessionOut)
def who_am_i(request: Request, response: Response, principal: CurrentPrincipal) -> SessionOut:
    """Who is logged in, with the session's CSRF token (none for API tokens)."""
    user = auth_of(request).db.get_user(principal.user_id)
    assert user is not None  # the principal was made from it a moment ago
    response.headers["Cache-Control"] = "no-store"
    return SessionOut(
        user_id=user.id,
        name=user.name,
        role=user.role,
        team_id=user.team_id,
        csrf_token=principal.csrf_token,
        via=principal.via,
    )


@router.post("/tokens", response_model=NewTokenOut, status_code=201)
def create_token(
    body: TokenIn, request: Request, response: Response, principal: CurrentPrincipal
) -> NewTokenOut:
    """A new API token for the logged-in user (a password session only: a token cannot make tokens)."""
    if principal.via != "session":
        raise HTTPException(status_code=403, detail="log in with a password to create API tokens")
    auth = auth_of(request)
    token, record = auth.issue_api_token(principal.user_id, body.name, expires_days=body.expires_days)
    auth.db.add_audit(
        principal.user_id,
        "api_token.create",
        f"api_token:{record.id}",
        {"name": record.name, "prefix": record.prefix},
    )
    response.headers["Cache-Control"] = "no-store"
    return NewTokenOut(**_token_out(record).model_dump(), token=token)


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(request: Request, principal: CurrentPrincipal) -> list[TokenOut]:
    """The caller's own API tokens (prefixes only), revoked ones too."""
    return [_token_out(t) for t in auth_of(request).db.list_api_tokens(principal.user_id)]


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(token_id: str, request: Request, principal: CurrentPrincipal) -> Response:
    """Revoke one of the caller's own API tokens."""
    auth = auth_of(request)
    record = auth.db.revoke_api_token(token_id, user_id=principal.user_id) if len(token_id) <= 64 else None
    if record is None:
        raise HTTPException(status_code=404, detail="no such API token of yours")
    auth.db.add_audit(
        principal.user_id, "api_token.revoke", f"api_token:{record.id}", {"prefix": record.prefix}
    )
    return Response(status_code=204)


@router.post("/setup", response_model=UserOut, status_code=201)
def setup(body: SetupIn, request: Request) -> UserOut:
    """First run only: create the first admin with the setup token from the log. 409 once an admin exists."""
    auth = auth_of(request)
    check_same_origin(request, auth)
    try:
        user = auth.setup(body.setup_token, body.user_id, body.name, body.password, ip=_client_ip(request))
    except SetupClosed as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    except RateLimited as exc:
        raise _too_many(exc) from None
    except WrongSetupToken as exc:
        raise HTTPException(status_code=403, detail=str(exc)) from None
    except UserExists as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    except WeakPassword as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return UserOut(user_id=user.id, name=user.name, role="admin")


# -- installing -------------------------------------------------------------------------------------


def _setup_address(state: AppState) -> str:
    settings = state.settings
    if settings is None:
        return "http://HOST:PORT"
    if settings.api.public_url:
        return settings.api.public_url.rstrip("/")
    host = f"[{settings.api.host}]" if ":" in settings.api.host else settings.api.host
    port = settings.api.port or "PORT"
    return f"http://{host}:{port}"


def install_auth(app: FastAPI, state: AppState) -> Auth:
    """Make the app's `Auth` (`app.state.auth`), add the routes, and open first-run setup while no admin
    can log in (the setup token is logged once, at WARNING)."""
    public_url = state.settings.api.public_url if state.settings is not None else None
    policy = AuthPolicy(
        public_origin=public_url, secure_cookies=bool(public_url and public_url.startswith("https://"))
    )
    auth = Auth(state.db, policy=policy)
    if state.feed is not None:  # this process has Redis: every API process counts failed logins together
        auth.limiter.share(state.feed.client)
    app.state.auth = auth
    app.include_router(router)
    setup_token = auth.open_setup()
    if setup_token is not None:
        log.warning(
            "no admin can log in yet. Finish setup with this start's one-time setup token: POST "
            '%s/api/v1/setup {"setup_token": "%s", "user_id": "...", "name": "...", "password": "..."}, '
            "or run `gridwatch users add USER_ID --name NAME --role admin CONFIG`",
            _setup_address(state),
            setup_token,
        )
    return auth
