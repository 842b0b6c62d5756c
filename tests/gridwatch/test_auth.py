"""Authentication on a real database (SQLite and PostgreSQL) through the HTTP API: logins, cookies, session
expiry, logout, API tokens, CSRF and origin checks, failed-login limits, first-run setup, the password policy,
and that no password, hash or token secret reaches a response or the log. The clocks are fake (no sleeps)
and the password hasher cheap, except where the app's own is under test."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient
from httpx import Response

from gridwatch.api import AppState, create_app
from gridwatch.auth.deps import CurrentPrincipal, OptionalPrincipal, require_roles
from gridwatch.auth.passwords import WeakPassword, check_policy, hash_password, needs_rehash, verify_password
from gridwatch.auth.principal import Principal
from gridwatch.auth.service import Auth, AuthPolicy
from gridwatch.auth.tokens import SESSION_COOKIE, token_hash
from storage.metadata import MetadataDB, TeamRecord, UserRecord
from storage.objectstore import ObjectStore

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)  # tests only: cheap to hash
PASSWORD = "correct horse battery"
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
API_TOKEN = re.compile(r"gwt_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")


class Clock:
    """Wall time for sessions and tokens, monotonic seconds for the failed-login windows."""

    def __init__(self) -> None:
        self.at = T0
        self.mono = 1000.0

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return self.mono

    def advance(self, **delta: float) -> None:
        step = timedelta(**delta)
        self.at += step
        self.mono += step.total_seconds()


class CountingHasher(PasswordHasher):
    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verified += 1
        return super().verify(hash, password)


@dataclass
class Env:
    client: TestClient
    auth: Auth
    clock: Clock
    db: MetadataDB

    def login(self, username: str = "ana", password: str = PASSWORD, **kw: Any) -> Response:
        return self.client.post("/api/v1/login", json={"username": username, "password": password}, **kw)

    def logged_in(self, username: str = "ana") -> str:
        r = self.login(username)
        assert r.status_code == 200, r.text
        csrf: str = r.json()["csrf_token"]
        return csrf


def _probe_router() -> APIRouter:
    """Routes that only use the dependencies, as the other routes will."""
    probe = APIRouter(prefix="/probe")

    @probe.get("/me")
    def me(principal: CurrentPrincipal) -> dict[str, Any]:
        return {"user_id": principal.user_id, "via": principal.via}

    @probe.post("/write")
    def write(principal: CurrentPrincipal) -> dict[str, str]:
        return {"user_id": principal.user_id}

    @probe.get("/maybe")
    def maybe(principal: OptionalPrincipal) -> dict[str, str | None]:
        return {"user_id": principal.user_id if principal else None}

    @probe.delete("/admin-only")
    def admin_only(principal: Principal = Depends(require_roles("admin"))) -> dict[str, str]:  # noqa: B008
        return {"user_id": principal.user_id}

    return probe


def _store() -> ObjectStore:
    return ObjectStore("127.0.0.1:9", "k", "secret-key", "unused")  # not reached by these routes


def add_user(
    db: MetadataDB, user_id: str, role: str = "operator", *, password: str = PASSWORD, **kw: Any
) -> None:
    db.create_user(UserRecord(user_id, user_id.title(), role, password_hash=FAST.hash(password), **kw))  # type: ignore[arg-type]


@pytest.fixture
def env(db: MetadataDB) -> Iterator[Env]:
    db.upsert_teams([TeamRecord("east", "East patrol")])
    add_user(db, "ana", "admin")
    add_user(db, "li", "patrol", team_id="east")
    app = create_app(AppState(db, _store(), 30))
    app.include_router(_probe_router())
    clock = Clock()
    auth = Auth(db, hasher=FAST, clock=clock.now, monotonic=clock.monotonic)
    app.state.auth = auth
    with TestClient(app) as client:
        yield Env(client, auth, clock, db)


def _cookie_header(r: Response) -> str:
    header: str = r.headers["set-cookie"]
    return header


# -- logins -----------------------------------------------------------------------------------------


def test_login_sets_a_strict_httponly_cookie_and_returns_the_csrf_token(env: Env) -> None:
    r = env.login()
    assert r.status_code == 200
    body = r.json()
    assert {k: body[k] for k in ("user_id", "name", "role", "team_id")} == {
        "user_id": "ana",
        "name": "Ana",
        "role": "admin",
        "team_id": None,
    }
    assert len(body["csrf_token"]) >= 43
    cookie = _cookie_header(r)
    attributes = {a.strip().split("=")[0].lower(): a.strip() for a in cookie.split(";")[1:]}
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "httponly" in attributes and attributes["samesite"].lower() == "samesite=strict"
    assert attributes["path"] == "Path=/" and "secure" not in attributes  # plain http here
    assert r.headers["cache-control"] == "no-store"
    token = env.client.cookies[SESSION_COOKIE]
    stored = env.db.get_session_by_hash(token_hash(token))
    assert stored is not None and stored.user_id == "ana" and stored.csrf_token == body["csrf_token"]
    assert env.db.get_session_by_hash(token) is None  # the token itself is not a key
    me = env.client.get("/api/v1/session").json()
    assert (me["user_id"], me["via"], me["csrf_token"]) == ("ana", "session", body["csrf_token"])
    assert env.login().status_code == 200  # logging in again replaces the browser's session
    assert env.db.get_session_by_hash(token_hash(token)) is None
    assert env.client.cookies[SESSION_COOKIE] != token


def test_the_cookie_is_secure_over_https_and_when_the_policy_says_so(env: Env) -> None:
    with TestClient(env.client.app, base_url="https://testserver") as https:
        r = https.post("/api/v1/login", json={"username": "ana", "password": PASSWORD})
        assert r.status_code == 200 and "secure" in _cookie_header(r).lower()
        assert https.get("/api/v1/session").status_code == 200
    env.client.app.state.auth = Auth(env.db, hasher=FAST, policy=AuthPolicy(secure_cookies=True))  # type: ignore[attr-defined]
    assert "secure" in _cookie_header(env.login()).lower()


def test_wrong_password_unknown_user_and_disabled_user_get_the_same_answer(env: Env) -> None:
    env.db.set_user_disabled("li", True)
    answers = [env.login("ana", "wrong password!"), env.login("nobody", PASSWORD), env.login("li", PASSWORD)]
    assert [r.status_code for r in answers] == [401, 401, 401]
    assert {r.json()["detail"] for r in answers} == {"wrong username or password"}
    assert all(r.headers["www-authenticate"] == "Bearer" and "set-cookie" not in r.headers for r in answers)
    assert SESSION_COOKIE not in env.client.cookies
    env.db.set_user_disabled("li", False)
    assert env.login("li").status_code == 200


def test_an_unknown_user_is_checked_against_a_dummy_hash(env: Env) -> None:
    """Same work for an unknown user as for a known one: nobody learns which ids exist by the time."""
    counting = CountingHasher(time_cost=1, memory_cost=8, parallelism=1)
    env.client.app.state.auth = Auth(env.db, hasher=counting)  # type: ignore[attr-defined]
    env.login("nobody", PASSWORD)
    env.login("ana", "wrong password!")
    env.db.upsert_users([UserRecord("nopass", "No password", "patrol")])
    env.login("nopass", PASSWORD)
    assert counting.verified == 3


def test_the_hash_is_upgraded_at_login_when_the_parameters_changed(env: Env) -> None:
    stronger = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    env.client.app.state.auth = Auth(env.db, hasher=stronger)  # type: ignore[attr-defined]
    before = env.db.get_user("ana")
    assert (
        before is not None
        and before.password_hash is not None
        and needs_rehash(before.password_hash, stronger)
    )
    assert env.login().status_code == 200
    after = env.db.get_user("ana")
    assert (
        after is not None and after.password_hash is not None and after.password_hash != before.password_hash
    )
    assert "m=16,t=2,p=1" in after.password_hash and not needs_rehash(after.password_hash, stronger)
    assert verify_password(after.password_hash, PASSWORD, stronger)
    assert env.login().status_code == 200


# -- sessions -----------------------------------------------------------------------------------------


def test_a_session_ends_after_the_idle_timeout(env: Env) -> None:
    env.logged_in()
    session_id = token_hash(env.client.cookies[SESSION_COOKIE])
    env.clock.advance(seconds=30)
    assert env.client.get("/probe/me").status_code == 200
    seen = env.db.get_session_by_hash(session_id)
    assert seen is not None and seen.last_seen_at == T0  # written at most once a minute
    env.clock.advance(seconds=31)
    assert env.client.get("/probe/me").status_code == 200
    seen = env.db.get_session_by_hash(session_id)
    assert seen is not None and seen.last_seen_at == T0 + timedelta(seconds=61)
    env.clock.advance(hours=11, minutes=59)
    assert env.client.get("/probe/me").status_code == 200  # 11 h 59 min idle: still on
    env.clock.advance(hours=12)
    r = env.client.get("/probe/me")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert "max-age=0" in _cookie_header(r).lower()  # the stale cookie is cleared
    assert env.db.get_session_by_hash(session_id) is None


def test_a_session_ends_after_its_lifetime_however_busy(env: Env) -> None:
    env.logged_in()
    for _ in range(15):  # a request every 11 h: never idle for 12 h
        env.clock.advance(hours=11)
        assert env.client.get("/probe/me").status_code == 200
    env.clock.advance(hours=2)
    assert env.client.get("/probe/me").status_code == 200  # 6 days 23 h after the login
    env.clock.advance(hours=1)
    assert env.client.get("/probe/me").status_code == 401  # 7 days


def test_a_disabled_user_loses_its_session(env: Env) -> None:
    env.logged_in("li")
    env.db.set_user_disabled("li", True)
    assert env.client.get("/probe/me").status_code == 401


def test_logout_ends_the_session_and_clears_the_cookie(env: Env) -> None:
    csrf = env.logged_in()
    session_id = token_hash(env.client.cookies[SESSION_COOKIE])
    assert env.client.post("/api/v1/logout").status_code == 403  # a cookie POST needs the CSRF token
    assert env.db.get_session_by_hash(session_id) is not None
    r = env.client.post("/api/v1/logout", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 204 and "max-age=0" in _cookie_header(r).lower()
    assert env.db.get_session_by_hash(session_id) is None
    assert env.client.get("/api/v1/session").status_code == 401


# -- API tokens ---------------------------------------------------------------------------------------


def _new_token(env: Env, csrf: str, **body: Any) -> dict[str, Any]:
    r = env.client.post("/api/v1/tokens", json={"name": "cron", **body}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    made: dict[str, Any] = r.json()
    return made


def test_api_tokens_are_shown_once_work_as_bearer_and_can_be_revoked(env: Env) -> None:
    csrf = env.logged_in("li")
    made = _new_token(env, csrf)
    token = made["token"]
    assert API_TOKEN.fullmatch(token) and token.startswith(f"gwt_{made['prefix']}_")
    [stored] = env.db.list_api_tokens("li")
    assert stored.token_hash == token_hash(token) and stored.prefix == made["prefix"]
    listed = env.client.get("/api/v1/tokens").json()
    assert [t["id"] for t in listed] == [made["id"]] and token not in str(listed)
    assert "token" not in listed[0] and "token_hash" not in listed[0]

    bearer = TestClient(env.client.app)  # no cookies
    auth = {"Authorization": f"Bearer {token}"}
    me = bearer.get("/api/v1/session", headers=auth).json()
    assert (me["user_id"], me["via"], me["csrf_token"]) == ("li", "token", None)
    assert bearer.post("/probe/write", headers=auth).status_code == 200  # no CSRF token needed
    used = env.db.get_api_token(made["id"])
    assert used is not None and used.last_used_at == T0
    assert bearer.post("/api/v1/tokens", json={"name": "more"}, headers=auth).status_code == 403
    assert (
        bearer.get("/probe/me", headers={"Authorization": "Bearer gwt_0000abcd_" + "x" * 43}).status_code
        == 401
    )
    assert bearer.get("/probe/me", headers={"Authorization": f"Basic {token}"}).status_code == 401

    assert env.client.delete(f"/api/v1/tokens/{made['id']}").status_code == 403  # cookie: CSRF
    assert (
        env.client.delete(f"/api/v1/tokens/{made['id']}", headers={"X-CSRF-Token": csrf}).status_code == 204
    )
    r = bearer.get("/probe/me", headers=auth)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert env.client.get("/api/v1/tokens").json()[0]["revoked_at"] is not None


def test_api_tokens_expire_and_stop_with_their_user(env: Env) -> None:
    csrf = env.logged_in("li")
    expiring = _new_token(env, csrf, expires_days=1)["token"]
    lasting = _new_token(env, csrf)["token"]
    bearer = TestClient(env.client.app)
    env.clock.advance(hours=23)
    assert bearer.get("/probe/me", headers={"Authorization": f"Bearer {expiring}"}).status_code == 200
    env.clock.advance(hours=1)
    assert bearer.get("/probe/me", headers={"Authorization": f"Bearer {expiring}"}).status_code == 401
    assert bearer.get("/probe/me", headers={"Authorization": f"Bearer {lasting}"}).status_code == 200
    env.db.set_user_disabled("li", True)
    assert bearer.get("/probe/me", headers={"Authorization": f"Bearer {lasting}"}).status_code == 401


def test_tokens_of_other_users_are_out_of_reach(env: Env) -> None:
    theirs = _new_token(env, env.logged_in("li"))
    csrf = env.logged_in("ana")
    assert env.client.get("/api/v1/tokens").json() == []
    assert (
        env.client.delete(f"/api/v1/tokens/{theirs['id']}", headers={"X-CSRF-Token": csrf}).status_code == 404
    )
    record = env.db.get_api_token(theirs["id"])
    assert record is not None and record.revoked_at is None


# -- CSRF, origins, roles -----------------------------------------------------------------------------


def test_csrf_for_cookie_requests(env: Env) -> None:
    csrf = env.logged_in()
    assert env.client.get("/probe/me").status_code == 200  # safe methods need none
    missing = env.client.post("/probe/write")
    assert missing.status_code == 403 and missing.json()["detail"] == "CSRF token missing or wrong"
    wrong = csrf[:-1] + ("B" if csrf.endswith("A") else "A")  # the real token but its last character
    assert env.client.post("/probe/write", headers={"X-CSRF-Token": wrong}).status_code == 403
    assert env.client.post("/probe/write", headers={"X-CSRF-Token": ""}).status_code == 403
    assert env.client.post("/probe/write", headers={"X-CSRF-Token": csrf}).status_code == 200
    same_origin = {"X-CSRF-Token": csrf, "Origin": "http://testserver"}
    assert env.client.post("/probe/write", headers=same_origin).status_code == 200
    for foreign in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}):
        r = env.client.post("/probe/write", headers={"X-CSRF-Token": csrf, **foreign})
        assert r.status_code == 403, foreign
    refused = env.client.post("/api/v1/login", json={"username": "ana", "password": PASSWORD},
                              headers={"Origin": "https://evil.example"})  # fmt: skip
    assert refused.status_code == 403  # no logging in from another site either


def test_the_public_origin_is_accepted(env: Env) -> None:
    env.client.app.state.auth = Auth(  # type: ignore[attr-defined]
        env.db, hasher=FAST, policy=AuthPolicy(public_origin="https://gridwatch.example")
    )
    csrf = env.logged_in()
    ok = env.client.post(
        "/probe/write", headers={"X-CSRF-Token": csrf, "Origin": "https://gridwatch.example"}
    )
    assert ok.status_code == 200


def test_roles_and_optional_principals(env: Env) -> None:
    anonymous = env.client.get("/probe/me")
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    assert env.client.get("/probe/maybe").json() == {"user_id": None}
    env.client.cookies.set(SESSION_COOKIE, "x" * 43)  # unknown session: anonymous where that is allowed
    assert env.client.get("/probe/maybe").json() == {"user_id": None}
    env.client.cookies.clear()
    csrf = env.logged_in("li")
    assert env.client.get("/probe/maybe").json() == {"user_id": "li"}
    assert env.client.delete("/probe/admin-only", headers={"X-CSRF-Token": csrf}).status_code == 403
    csrf = env.logged_in("ana")
    assert env.client.delete("/probe/admin-only", headers={"X-CSRF-Token": csrf}).json() == {"user_id": "ana"}
    with pytest.raises(ValueError):
        require_roles("root")


# -- failed-login limits --------------------------------------------------------------------------------


def test_the_sixth_failed_login_for_a_username_is_refused_even_with_the_right_password(env: Env) -> None:
    for _ in range(5):
        assert env.login("li", "wrong password!").status_code == 401
    limited = env.login("li", PASSWORD)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 300
    assert env.login("LI ", PASSWORD).status_code == 429  # the same name however it is typed
    assert env.login("ana").status_code == 200  # other users are not held up
    env.clock.advance(seconds=299)
    assert env.login("li", PASSWORD).status_code == 429
    env.clock.advance(seconds=2)
    assert env.login("li", PASSWORD).status_code == 200


def test_a_success_clears_the_username_count(env: Env) -> None:
    for _ in range(4):
        env.login("li", "wrong password!")
    assert env.login("li").status_code == 200
    for _ in range(4):
        assert env.login("li", "wrong password!").status_code == 401
    assert env.login("li").status_code == 200


def test_twenty_failures_from_one_address_hold_it_up(env: Env) -> None:
    for i in range(20):
        assert env.login(f"nobody{i}", PASSWORD).status_code == 401
    limited = env.login("ana")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1


# -- first-run setup --------------------------------------------------------------------------------------


def _setup_token(caplog: pytest.LogCaptureFixture) -> str:
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "gridwatch.auth" and "setup_token" in r.getMessage()
    ]
    assert len(lines) == 1, lines
    assert "/api/v1/setup" in lines[0] and "gridwatch users add" in lines[0]
    found = re.search(r'"setup_token": "([A-Za-z0-9_-]{43})"', lines[0])
    assert found is not None
    return found.group(1)


def test_first_run_setup(db: MetadataDB, caplog: pytest.LogCaptureFixture) -> None:
    db.upsert_users([UserRecord("li", "Li", "patrol")])
    caplog.set_level(logging.INFO)
    app = create_app(AppState(db, _store(), 30))
    warnings = [r for r in caplog.records if r.name == "gridwatch.auth" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    setup_token = _setup_token(caplog)
    body = {"setup_token": setup_token, "user_id": "root", "name": "Root", "password": PASSWORD}
    with TestClient(app) as client:
        assert client.post("/api/v1/setup", json=body | {"setup_token": "x" * 43}).status_code == 403
        assert client.post("/api/v1/setup", json=body | {"setup_token": ""}).status_code == 422
        weak = client.post("/api/v1/setup", json=body | {"password": "short"})
        assert weak.status_code == 422 and "at least 10" in weak.json()["detail"]
        assert client.post("/api/v1/setup", json=body | {"password": "root"}).status_code == 422
        assert client.post("/api/v1/setup", json=body | {"user_id": "li"}).status_code == 409  # taken
        made = client.post("/api/v1/setup", json=body)
        assert made.status_code == 201 and made.json() == {"user_id": "root", "name": "Root", "role": "admin"}
        assert client.post("/api/v1/setup", json=body).status_code == 409  # once only
        assert client.post("/api/v1/setup", json=body | {"user_id": "root2"}).status_code == 409
        login = client.post("/api/v1/login", json={"username": "root", "password": PASSWORD})
        assert login.status_code == 200 and login.json()["role"] == "admin"
        db.set_user_disabled("root", True)  # no admin again, but this start's token is spent
        assert client.post("/api/v1/setup", json=body | {"user_id": "root3"}).status_code == 409
        db.set_user_disabled("root", False)
    caplog.clear()
    create_app(AppState(db, _store(), 30))  # the next start: an admin exists, no setup token
    assert not [r for r in caplog.records if "setup_token" in r.getMessage()]
    assert [a.action for a in db.list_audit(target="user:root")] == ["user.setup"]


def test_setup_gives_a_password_to_an_admin_of_the_config(
    db: MetadataDB, caplog: pytest.LogCaptureFixture
) -> None:
    db.upsert_users([UserRecord("chief", "Chief", "admin")])  # from the config: no password yet
    assert db.count_admins() == 0
    caplog.set_level(logging.WARNING)
    app = create_app(AppState(db, _store(), 30))
    body = {"setup_token": _setup_token(caplog), "user_id": "chief", "name": "x", "password": PASSWORD}
    with TestClient(app) as client:
        assert client.post("/api/v1/setup", json=body).status_code == 201
        assert (
            client.post("/api/v1/login", json={"username": "chief", "password": PASSWORD}).status_code == 200
        )
    assert db.count_admins() == 1


def test_no_setup_token_while_an_admin_exists(db: MetadataDB, caplog: pytest.LogCaptureFixture) -> None:
    add_user(db, "ana", "admin")
    caplog.set_level(logging.INFO)
    app = create_app(AppState(db, _store(), 30))
    assert not [r for r in caplog.records if "setup" in r.getMessage()]
    body = {"setup_token": "x" * 43, "user_id": "root", "name": "Root", "password": PASSWORD}
    with TestClient(app) as client:
        assert client.post("/api/v1/setup", json=body).status_code == 409


# -- passwords ----------------------------------------------------------------------------------------


def test_password_policy() -> None:
    check_policy("ten chars!", "li")
    for weak, why in (
        ("nine char", "at least 10"),
        ("Li-station", "ok"),
        ("li-station", "ok"),
        ("aaaaaaaaaaaa", "repeated"),
        ("x" * 1025, "at most"),
    ):
        if why == "ok":
            check_policy(weak, "li")
            continue
        with pytest.raises(WeakPassword, match=why):
            check_policy(weak, "li")
    with pytest.raises(WeakPassword, match="username"):
        check_policy("Longusername", "longusername")
    hashed = hash_password(PASSWORD, FAST)
    assert hashed.startswith("$argon2id$") and PASSWORD not in hashed
    assert verify_password(hashed, PASSWORD, FAST) and not verify_password(hashed, PASSWORD + "x", FAST)
    assert not verify_password("$2b$12$notargon", PASSWORD, FAST) and needs_rehash("$2b$12$notargon", FAST)
    assert not needs_rehash(hashed, FAST)


# -- nothing secret leaks ---------------------------------------------------------------------------------


def test_no_password_hash_or_token_secret_in_responses_or_logs(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bodies: list[str] = []

    def keep(r: Response) -> Response:
        bodies.append(r.text)
        return r

    keep(env.login("li", "li's wrong password"))
    keep(env.login("li's password typed as name", PASSWORD))
    keep(env.client.post("/api/v1/login", json={"username": "li", "password": PASSWORD, "note": PASSWORD}))
    keep(env.client.post("/api/v1/login", json={"username": "li", "passwrd": PASSWORD}))
    keep(env.client.post("/api/v1/login", json={"username": "li", "password": PASSWORD * 60}))
    login = keep(env.login("li"))
    csrf = login.json()["csrf_token"]
    session_token = env.client.cookies[SESSION_COOKIE]
    made = env.client.post("/api/v1/tokens", json={"name": "cron"}, headers={"X-CSRF-Token": csrf})
    api_token = made.json()["token"]  # the one response that carries it
    keep(env.client.get("/api/v1/tokens"))
    keep(env.client.get("/api/v1/session"))
    keep(env.client.get("/probe/me", headers={"Authorization": f"Bearer {api_token}"}))
    keep(env.client.post("/api/v1/logout", headers={"X-CSRF-Token": csrf}))
    user = env.db.get_user("li")
    assert user is not None and user.password_hash is not None
    secrets = {
        "password": PASSWORD,
        "hash": user.password_hash,
        "hash body": user.password_hash.rsplit("$", 1)[1],
        "session token": session_token,
        "api token": api_token,
        "api token secret": api_token.split("_", 2)[2],
        "wrong password": "li's wrong password",
    }
    text = "\n".join(bodies)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for what, secret in secrets.items():
        assert secret not in text, f"{what} in a response"
        assert secret not in logged, f"{what} in the log"
    assert "failed login for 'li'" in logged and "failed login for an unknown user" in logged
    assert "li's password typed as name" not in logged
    record = env.db.list_api_tokens("li")[0]
    assert user.password_hash not in repr(user) and record.token_hash not in repr(record)


# -- the store ------------------------------------------------------------------------------------------


def test_the_store_keeps_hashes_only_and_the_disabled_flag(db: MetadataDB) -> None:
    add_user(db, "ana", "admin")
    assert db.count_admins() == 1
    db.set_user_disabled("ana", True)
    db.upsert_users([UserRecord("ana", "Ana B", "admin")])  # as every start does with the config's users
    user = db.get_user("ana")
    assert user is not None and user.disabled and user.name == "Ana B"
    assert db.count_admins() == 0
    with pytest.raises(KeyError):
        db.set_user_disabled("ghost", True)
    with pytest.raises(KeyError):
        db.set_password_hash("ghost", FAST.hash(PASSWORD))
    with pytest.raises(ValueError):
        db.set_password_hash("ana", PASSWORD)  # a clear password is refused
    with pytest.raises(ValueError, match="exists"):
        add_user(db, "ana", "admin")
    with pytest.raises(ValueError):
        db.create_session(session_id="x" * 43, user_id="ana", csrf_token="c", expires_at=T0)
    with pytest.raises(ValueError):
        db.create_api_token(user_id="ana", name="t", token_hash="gwt_0123abcd_secret", prefix="0123abcd")

    session_id = "a" * 64
    db.create_session(
        session_id=session_id, user_id="ana", csrf_token="c", expires_at=T0 + timedelta(days=7), at=T0
    )
    assert db.touch_session(session_id, T0 + timedelta(minutes=5))
    assert not db.touch_session(session_id, T0)  # never back
    db.create_session(
        session_id="b" * 64, user_id="ana", csrf_token="c", expires_at=T0 + timedelta(hours=1), at=T0
    )
    ended = db.delete_expired_sessions(now=T0 + timedelta(hours=2), idle_before=T0)
    assert ended == 1 and db.get_session_by_hash("b" * 64) is None
    assert db.delete_sessions_of_user("ana") == 1 and not db.delete_session(session_id)

    token = db.create_api_token(user_id="ana", name="cron", token_hash="c" * 64, prefix="0123abcd", at=T0)
    assert db.get_api_token_by_hash("c" * 64) == token
    first = db.revoke_api_token(token.id, at=T0 + timedelta(hours=1))
    again = db.revoke_api_token(token.id, at=T0 + timedelta(hours=2))
    assert (
        first is not None
        and again is not None
        and again.revoked_at == first.revoked_at == T0 + timedelta(hours=1)
    )
    assert db.revoke_api_token(token.id, user_id="li") is None and db.revoke_api_token("nope") is None
    assert db.touch_api_token(token.id, T0) and not db.touch_api_token(token.id, T0)
