"""FastAPI dependencies: who is asking (`current_principal`, `optional_principal`), with which role
(`require_roles`), and CSRF protection for cookie sessions.

Credentials: `Authorization: Bearer gwt_...` (an API token; it wins when both are sent) or the `gw_session`
cookie. A cookie-authenticated POST, PUT, PATCH or DELETE must carry the session's CSRF token in
`X-CSRF-Token` and must not come from another origin (`Origin`, `Sec-Fetch-Site`); a bearer token needs
neither, since a browser never adds it by itself. Use:

    @router.post("/things")
    def make(principal: CurrentPrincipal) -> ...: ...

    @router.delete("/things/{id}", dependencies=[Depends(require_roles("admin"))])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, Response

from gridwatch.auth.principal import Principal
from gridwatch.auth.service import Auth
from gridwatch.auth.tokens import SESSION_COOKIE, same
from storage.metadata import ROLES

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_HEADER = "X-CSRF-Token"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def auth_of(request: Request) -> Auth:
    auth = getattr(request.app.state, "auth", None)
    if not isinstance(auth, Auth):
        raise RuntimeError("authentication is not installed on this app (gridwatch.auth.login.install_auth)")
    return auth


def cookie_secure(request: Request, auth: Auth) -> bool:
    """The session cookie is Secure on https requests, and on every request when the policy says so."""
    return request.url.scheme == "https" or auth.policy.secure_cookies


def clear_cookie_header(request: Request, auth: Auth) -> str:
    scratch = Response()
    scratch.delete_cookie(
        SESSION_COOKIE, path="/", secure=cookie_secure(request, auth), httponly=True, samesite="strict"
    )
    return scratch.headers["set-cookie"]


def unauthorized(detail: str, *, clear_cookie: str | None = None) -> HTTPException:
    headers = {"WWW-Authenticate": "Bearer"}
    if clear_cookie is not None:
        headers["Set-Cookie"] = clear_cookie
    return HTTPException(status_code=401, detail=detail, headers=headers)


def _origin(url: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None
    return (scheme, host, port) if scheme in _DEFAULT_PORTS and host else None


def check_same_origin(request: Request, auth: Auth) -> None:
    """403 for a request a browser sent from another site: an Origin header that is neither this request's
    own origin nor the configured public one, or `Sec-Fetch-Site: cross-site`."""
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        raise HTTPException(status_code=403, detail="cross-site request refused")
    origin = request.headers.get("origin")
    if origin is None:
        return
    allowed = {_origin(str(request.base_url))}
    if auth.policy.public_origin:
        allowed.add(_origin(auth.policy.public_origin))
    found = _origin(origin)
    if found is None or found not in allowed:
        raise HTTPException(status_code=403, detail="cross-origin request refused")


def _authenticate(request: Request) -> Principal | None:
    """The request's principal, None when it carries no credentials; 401 for bad ones, 403 for a cookie
    request that fails the CSRF or origin check."""
    auth = auth_of(request)
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise unauthorized("use Authorization: Bearer gwt_...")
        principal = auth.token_principal(value.strip())
        if principal is None:
            raise unauthorized("invalid, expired or revoked API token")
        return principal
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    principal = auth.session_principal(cookie)
    if principal is None:
        raise unauthorized(
            "the session has ended; log in again", clear_cookie=clear_cookie_header(request, auth)
        )
    if request.method.upper() in UNSAFE_METHODS:
        check_same_origin(request, auth)
        sent = request.headers.get(CSRF_HEADER)
        if sent is None or principal.csrf_token is None or not same(sent, principal.csrf_token):
            raise HTTPException(status_code=403, detail="CSRF token missing or wrong")
    return principal


def current_principal(request: Request) -> Principal:
    """The authenticated principal (also left in `request.state.principal`); 401 with
    `WWW-Authenticate: Bearer` when there are no credentials or they are invalid, expired or of a disabled
    user; 403 when a cookie request fails the CSRF or origin check."""
    principal = _authenticate(request)
    if principal is None:
        raise unauthorized("not authenticated")
    request.state.principal = principal
    return principal


def optional_principal(request: Request) -> Principal | None:
    """The principal, or None for a request without valid credentials (an ended session, a bad token);
    a valid session's unsafe request that fails the CSRF or origin check is still 403."""
    try:
        principal = _authenticate(request)
    except HTTPException as exc:
        if exc.status_code == 401:
            return None
        raise
    if principal is not None:
        request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
OptionalPrincipal = Annotated[Principal | None, Depends(optional_principal)]


def require_roles(*roles: str) -> Callable[[Principal], Principal]:
    """A dependency that lets through only principals with one of `roles` (403 for others, 401 without
    credentials): `Depends(require_roles("admin", "operator"))`."""
    unknown = set(roles) - set(ROLES)
    if not roles or unknown:
        raise ValueError(f"require_roles needs roles out of {ROLES}, got {roles!r}")
    allowed = frozenset(roles)

    def dependency(principal: CurrentPrincipal) -> Principal:
        if principal.role not in allowed:
            raise HTTPException(status_code=403, detail=f"this needs the role {' or '.join(sorted(allowed))}")
        return principal

    return dependency
