"""The API's request limits and response hardening (gridwatch.api_limits) on the real app, a real database
and a real SeaweedFS store: the body limit (by Content-Length before reading, and counted on a chunked body
through a real uvicorn server), security headers, no secret in any response, and a regression test for
each server error the fuzzing (test_api_fuzz.py) or probing found."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from fastapi.responses import HTMLResponse
from fastapi.testclient import TestClient

from alerts.notifiers.webpush import VapidKeys
from gridwatch.alerting import sync_organisation
from gridwatch.api import AppState, create_app
from gridwatch.api_limits import DEFAULT_MAX_BODY_BYTES, DOCS_CSP, SECURITY_HEADERS
from gridwatch.metrics import RuntimeCollector, make_registry, render
from gridwatch.services import S3Server
from gridwatch.settings import Settings
from ingest.urls import redact_text, redact_url
from storage.metadata import AlertRecord, CameraRecord, MetadataDB
from storage.objectstore import ObjectStore

T0 = datetime.now(UTC) - timedelta(hours=1)
MiB = 1024 * 1024
CAMERA_PASSWORD = "cam-Pw-7731x"
CAMERA_URL = f"rtsp://admin:{CAMERA_PASSWORD}@10.0.0.9:554/ch1"
RECORD_PASSWORD = "rec-Pw-5520y"
WEBHOOK_SECRET = "whsec-3c9f1e0b"
WEBHOOK_HEADER = "Bearer hook-token-8d2e"
ROBOT_KEY = "robot-key-61af0c"
MQTT_PASSWORD = "mqtt-pw-90b3"
REDIS_PASSWORD = "redis-pw-4471"
DB_PASSWORD = "db-pw-2290"
VAPID = VapidKeys.generate()


def _settings(s3_secret: str = "unused") -> Settings:
    return Settings.model_validate(
        {
            "villages": [{"id": "v1", "name": "Village"}],
            "teams": [{"id": "east", "name": "East patrol", "members": ["li"]}],
            "users": [{"id": "li", "name": "Li", "role": "patrol", "team": "east"}],
            "grids": [{"id": "g1", "name": "Grid 1", "village": "v1", "team": "east"}],
            "cameras": [
                {
                    "id": "cam1",
                    "name": "Gate",
                    "village": "v1",
                    "grid": "g1",
                    "url": CAMERA_URL,
                    "record_url": f"rtsp://admin:{RECORD_PASSWORD}@10.0.0.9:554/main",
                }
            ],
            "rules": [{"name": "people", "labels": ["person"]}],
            "s3": {"secret_key": s3_secret},
            "redis": {"url": f"redis://:{REDIS_PASSWORD}@10.0.0.2:6379/0"},
            "database": {"url": f"postgresql+psycopg://gw:{DB_PASSWORD}@10.0.0.3/gridwatch"},
            "notifiers": [
                {
                    "type": "webhook",
                    "name": "hook",
                    "url": "https://hooks.example.org/in",
                    "secret": WEBHOOK_SECRET,
                    "headers": {"Authorization": WEBHOOK_HEADER},
                },
                {
                    "type": "dingtalk",
                    "name": "ding",
                    "url": f"https://oapi.dingtalk.com/robot/send?access_token={ROBOT_KEY}",
                },
                {
                    "type": "mqtt",
                    "name": "mqtt",
                    "host": "10.0.0.4",
                    "username": "gw",
                    "password": MQTT_PASSWORD,
                },
                {
                    "type": "webpush",
                    "name": "push",
                    "vapid_private_key": VAPID.private_base64(),
                    "subject": "mailto:ops@example.org",
                },
            ],
        }
    )


def _seed(db: MetadataDB, store: ObjectStore, settings: Settings) -> dict[str, str]:
    """The organisation, the camera as `gridwatch run` registers it, an alert with snapshot, thumbnail and
    clip, and one in an incident. Gives the objects' ids."""
    sync_organisation(settings, db)
    db.upsert_cameras(
        [
            CameraRecord(c.id, c.name, c.village, c.grid, redact_url(c.url.get_secret_value()), c.detect_fps)
            for c in settings.cameras
        ]
    )
    alert_id, in_incident = f"{1:032x}", f"{2:032x}"
    for i, alert in enumerate((alert_id, in_incident)):
        at = T0 + timedelta(minutes=i)
        db.add_alert(AlertRecord(alert, "cam1", "v1", "g1", "fire", 0.9, (1, 2, 3, 4), at, at))
    snapshot, thumbnail = store.snapshot_key("cam1", T0, alert_id), store.thumbnail_key("cam1", T0, alert_id)
    clip = store.clip_key("cam1", T0, alert_id)
    for key in (snapshot, thumbnail, clip):
        store.put_bytes(key, b"\xff\xd8data", "application/octet-stream")
    db.set_snapshot(alert_id, snapshot)
    db.set_thumbnail(alert_id, thumbnail)
    db.set_clip(alert_id, key=clip, status="stored", duration_s=5.0)
    incident = db.attach_alert_to_incident(
        alert_id=in_incident, camera_id="cam1", village="v1", grid="g1", group="fire", label="fire",
        severity="critical", at=T0, window_s=600, team="east",
    ).incident  # fmt: skip
    return {"alert": alert_id, "in_incident": in_incident, "incident": incident.id}


def _health(camera_id: str) -> dict[str, Any] | None:
    """What `gridwatch run` reports for a camera whose stream failed (the error text redacted by ingest)."""
    if camera_id != "cam1":
        return None
    error = redact_text(f"cannot open {CAMERA_URL} (Connection refused)", CAMERA_URL, CAMERA_PASSWORD)
    return {"detect": {"state": "offline", "input_fps": 0.0, "last_error": error}}


@pytest.fixture
def world(
    tmp_path: Path, s3_server: S3Server, s3_keys: tuple[str, str], api_token: Callable[..., str]
) -> Iterator[tuple[AppState, dict[str, str], dict[str, str]]]:
    """SQLite (the database-dependent regressions run on both dialects below). Gives the state, an admin's
    headers and the objects' ids."""
    db = MetadataDB(f"sqlite:///{tmp_path / 'limits.db'}")
    db.migrate()
    store = ObjectStore(s3_server.endpoint, *s3_keys, bucket="limits-test")
    store.ensure_bucket()
    settings = _settings(s3_keys[1])
    ids = _seed(db, store, settings)
    registry = make_registry(RuntimeCollector({}, {}, loop=lambda: None, alerts_by_label=lambda: {"fire": 2}))
    state = AppState(
        db, store, 30, _health, metrics=lambda: render(registry), settings=settings, publish=lambda _m: None
    )
    yield state, {"Authorization": api_token(db, "ada", "admin")}, ids
    db.close()


# -- the body limit -------------------------------------------------------------------------------------


def _rule_body(size: int) -> bytes:
    """A valid rule edit of exactly `size` bytes (JSON padded with spaces)."""
    body = json.dumps({"labels": ["person"]}).encode()
    return body + b" " * (size - len(body))


def test_a_body_over_the_limit_is_refused_by_its_content_length(
    world: tuple[AppState, dict[str, str], dict[str, str]],
) -> None:
    state, admin, _ = world
    with TestClient(create_app(state), headers=admin) as client:
        json_type = {"Content-Type": "application/json"}
        at_limit = client.put(
            "/api/v1/rules/big", content=_rule_body(DEFAULT_MAX_BODY_BYTES), headers=json_type
        )
        assert at_limit.status_code == 200, at_limit.text
        over = client.put(
            "/api/v1/rules/big", content=_rule_body(DEFAULT_MAX_BODY_BYTES + 1), headers=json_type
        )
        assert over.status_code == 413
        assert over.json() == {"detail": f"the request body is over {DEFAULT_MAX_BODY_BYTES} bytes"}
        assert over.headers["connection"] == "close"
        for name, value in SECURITY_HEADERS.items():
            assert over.headers[name] == value
    with TestClient(create_app(state)) as anonymous:  # refused before any route runs: no credentials needed
        assert anonymous.post("/api/v1/login", content=b"x" * (2 * MiB)).status_code == 413
        assert anonymous.request("GET", "/healthz", content=b"x" * (2 * MiB)).status_code == 413


def test_the_limit_is_a_parameter_of_the_app(world: tuple[AppState, dict[str, str], dict[str, str]]) -> None:
    state, admin, _ = world
    headers = {**admin, "Content-Type": "application/json"}
    with TestClient(create_app(state, max_body_bytes=100), headers=headers) as client:
        assert client.put("/api/v1/rules/small", content=_rule_body(100)).status_code == 200
        assert client.put("/api/v1/rules/small", content=_rule_body(101)).status_code == 413


@pytest.fixture
def served(
    world: tuple[AppState, dict[str, str], dict[str, str]], until: Callable[..., Any]
) -> Iterator[tuple[int, AppState, dict[str, str]]]:
    """The app on a real uvicorn server (h11, as `gridwatch run` serves it) on a free loopback port."""
    state, admin, _ = world
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    config = uvicorn.Config(
        create_app(state), http="h11", log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="api-test", daemon=True)
    thread.start()
    until("the API server started (or its thread ended)", lambda: server.started or not thread.is_alive())
    assert server.started, "the API server did not start"
    try:
        yield sock.getsockname()[1], state, admin
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_a_declared_length_over_the_limit_is_answered_before_the_body_is_sent(
    served: tuple[int, AppState, dict[str, str]],
) -> None:
    port, _, admin = served
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(
            b"PUT /api/v1/rules/big HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Authorization: {admin['Authorization']}\r\nContent-Length: {2 * MiB}\r\n\r\n".encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer:  # a server waiting for the body times this out (5 s)
            chunk = conn.recv(4096)
            assert chunk, f"the connection closed without an answer: {answer!r}"
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 "), answer


def test_a_chunked_body_is_cut_off_at_the_limit(served: tuple[int, AppState, dict[str, str]]) -> None:
    port, state, admin = served
    chunk, chunks = b" " * (64 * 1024), 1024  # 64 MiB in all, if the server read it all
    pulled = 0

    def endless() -> Iterator[bytes]:
        nonlocal pulled
        yield b'{"labels": ["person"]}'
        for _ in range(chunks):
            pulled += len(chunk)
            yield chunk

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=admin, timeout=10) as client:
        response = client.put("/api/v1/rules/streamed", content=endless())
        assert "content-length" not in response.request.headers  # sent chunked
        assert response.status_code == 413
        assert response.json()["detail"] == f"the request body is over {DEFAULT_MAX_BODY_BYTES} bytes"
        # the server stopped reading and closed: the client could not send much more than the socket buffers
        assert pulled < (chunks * len(chunk)) // 4, pulled
        assert "streamed" not in {o.name for o in state.db.list_rule_overrides()}

        def in_pieces() -> Iterator[bytes]:
            body = json.dumps({"labels": ["person"], "min_score": 0.7}).encode()
            for at in range(0, len(body), 3):
                yield body[at : at + 3]

        fine = client.put(
            "/api/v1/rules/streamed", content=in_pieces(), headers={"Content-Type": "application/json"}
        )
        assert fine.status_code == 200, fine.text
        assert fine.json()["rule"]["min_score"] == 0.7


# -- security headers -----------------------------------------------------------------------------------


def test_every_response_has_the_security_headers_and_html_a_strict_policy(
    world: tuple[AppState, dict[str, str], dict[str, str]],
) -> None:
    state, admin, ids = world
    app = create_app(state)

    @app.get("/test-page", response_class=HTMLResponse)
    def page() -> str:  # stands for the web UI's pages
        return "<!doctype html><title>t</title>"

    with TestClient(app, follow_redirects=False) as client:
        responses = {
            "json": client.get("/healthz"),
            "401": client.get("/api/v1/alerts"),
            "404": client.get("/api/v1/alerts/nope", headers=admin),
            "307": client.get(f"/api/v1/alerts/{ids['alert']}/snapshot", headers=admin),
            "text": client.get("/metrics", headers=admin),
            "docs": client.get("/docs"),
            "page": client.get("/test-page"),
        }
        assert responses["307"].status_code == 307 and responses["text"].status_code == 200
        for what, response in responses.items():
            for name, value in SECURITY_HEADERS.items():
                assert response.headers.get(name) == value, (what, name)
        for what in ("json", "401", "404", "307", "text"):
            assert "content-security-policy" not in responses[what].headers, what
        assert responses["docs"].headers["content-security-policy"] == DOCS_CSP
        policy = dict(
            part.strip().split(" ", 1)
            for part in responses["page"].headers["content-security-policy"].split(";")
        )
        store = f"http://{state.store.endpoint}"
        assert policy["default-src"] == "'self'"
        assert policy["img-src"].split() == ["'self'", store, "data:", "blob:"]
        assert policy["media-src"].split() == ["'self'", store, "blob:"]
        assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
        assert (
            "script-src" not in policy
            and "unsafe" not in responses["page"].headers["content-security-policy"]
        )
        # what the policy lets images load from is where the API redirects them to
        assert responses["307"].headers["location"].startswith(store + "/")


# -- no secret in any response --------------------------------------------------------------------------


def _secrets(settings: Settings) -> dict[str, str]:
    return {
        "camera password": CAMERA_PASSWORD,
        "record password": RECORD_PASSWORD,
        "S3 secret key": settings.s3.secret_key.get_secret_value(),
        "webhook secret": WEBHOOK_SECRET,
        "webhook header": WEBHOOK_HEADER,
        "robot key": ROBOT_KEY,
        "MQTT password": MQTT_PASSWORD,
        "Redis password": REDIS_PASSWORD,
        "database password": DB_PASSWORD,
        "VAPID private key": VAPID.private_base64(),
    }


def test_no_secret_appears_in_any_get_response(
    world: tuple[AppState, dict[str, str], dict[str, str]],
) -> None:
    state, admin, ids = world
    assert state.settings is not None
    secrets = _secrets(state.settings)
    assert secrets["S3 secret key"] == "gw-test-secret-Zq81x"  # the store's real key
    [camera] = state.db.list_cameras()
    assert camera.url_redacted == "rtsp://admin:***@10.0.0.9:554/ch1"  # the table holds the redacted URL
    app = create_app(state)
    values = {
        "alert_id": ids["alert"], "incident_id": ids["incident"], "name": "people", "token_id": "x",
        "camera_id": camera.id, "village_id": camera.village, "grid_id": camera.grid, "team_id": "x",
        "user_id": "x",
    }  # fmt: skip
    documented = app.openapi()["paths"]  # (FastAPI 0.165 keeps included routers' routes out of app.routes)
    paths = sorted(
        {path.format(**values) for path, ops in documented.items() if "get" in ops and path != "/api/v1/feed"}
        | {"/docs", "/redoc", "/openapi.json", f"/api/v1/alerts/{ids['in_incident']}"}
    )
    assert {"/api/v1/cameras", "/api/v1/rules", "/api/v1/push/key", "/metrics"} <= set(paths)
    with TestClient(app, headers=admin, follow_redirects=False) as client:
        answered = {}
        for path in paths:
            response = client.get(path)
            answered[path] = response.status_code
            seen = response.text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
            for what, secret in secrets.items():
                for form in {secret, quote(secret, safe=""), base64.b64encode(secret.encode()).decode()}:
                    assert form not in seen, f"{what} in the answer to GET {path}"
        # the routes did their work (a 404 everywhere would prove nothing)
        assert answered["/api/v1/cameras"] == 200 and "admin:***@" in client.get("/api/v1/cameras").text
        assert answered["/api/v1/push/key"] == 200 and answered["/metrics"] == 200
        assert answered[f"/api/v1/alerts/{ids['alert']}/clip"] == 307
        assert answered["/api/v1/rules"] == 200 and answered[f"/api/v1/incidents/{ids['incident']}"] == 200


# -- regressions: server errors the fuzzing or probing found --------------------------------------------


@pytest.fixture
def on_db(db: MetadataDB, api_token: Callable[..., str]) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The app over each database (NUL is an error only on PostgreSQL), without an object store."""
    settings = _settings()
    store = ObjectStore("127.0.0.1:9", "k", "secret-key", "unused")  # not reached by these routes
    ids = _seed_without_store(db, settings)
    state = AppState(db, store, 30, settings=settings, publish=lambda _m: None)
    with TestClient(create_app(state), headers={"Authorization": api_token(db, "ada", "admin")}) as client:
        yield client, ids


def _seed_without_store(db: MetadataDB, settings: Settings) -> dict[str, str]:
    sync_organisation(settings, db)
    db.upsert_cameras([CameraRecord("cam1", "Gate", "v1", "g1", "rtsp://admin:***@10.0.0.9/ch1", 2.0)])
    alert_id = f"{2:032x}"
    db.add_alert(AlertRecord(alert_id, "cam1", "v1", "g1", "fire", 0.9, (1, 2, 3, 4), T0, T0))
    incident = db.attach_alert_to_incident(
        alert_id=alert_id, camera_id="cam1", village="v1", grid="g1", group="fire", label="fire",
        severity="critical", at=T0, window_s=600, team="east",
    ).incident  # fmt: skip
    return {"alert": alert_id, "incident": incident.id}


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("params", "status"),
    [
        # a naive datetime in a cursor reached the database (ValueError: naive datetime)
        ({"cursor": _cursor("2026-01-01T00:00:00|x")}, 400),
        ({"cursor": _cursor("00011001000000000|")}, 400),  # fromisoformat reads it as naive 0001-10-01
        # datetimes that are not UTC datetimes (OverflowError converting them to UTC)
        ({"cursor": _cursor("0001-01-01T00:00:00+14:00|x")}, 400),
        ({"cursor": _cursor("9999-12-31T23:59:59-14:00|x")}, 400),
        ({"since": "9999-12-31T23:59:59-14:00"}, 422),
        ({"since": "0001-01-01T00:00:00+14:00"}, 422),
        ({"until": "9999-12-31T23:59:59-14:00"}, 422),
    ],
)
def test_odd_cursors_and_datetimes_are_client_errors(
    on_db: tuple[TestClient, dict[str, str]], params: dict[str, str], status: int
) -> None:
    client, _ = on_db
    response = client.get("/api/v1/alerts", params=params)
    assert response.status_code == status, response.text


def test_cursors_and_datetimes_at_the_edges_still_work(on_db: tuple[TestClient, dict[str, str]]) -> None:
    client, ids = on_db
    everything = {"since": "0001-01-01T00:00:00+00:00", "until": "9999-12-31T23:59:59+00:00"}
    assert [a["id"] for a in client.get("/api/v1/alerts", params=everything).json()["items"]] == [
        ids["alert"]
    ]
    later = _cursor("9999-12-31T23:59:59+00:00|x")
    assert [a["id"] for a in client.get("/api/v1/alerts", params={"cursor": later}).json()["items"]] == [
        ids["alert"]
    ]
    in_kolkata = (T0 + timedelta(minutes=1)).astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()
    listed = client.get("/api/v1/alerts", params={"cursor": _cursor(f"{in_kolkata}|x")}).json()["items"]
    assert [a["id"] for a in listed] == [ids["alert"]]


NUL_IN_PATH_OR_QUERY = [  # each was a 500 on PostgreSQL (psycopg.DataError: text cannot contain NUL)
    ("GET", "/api/v1/alerts?label=a%00"),
    ("GET", "/api/v1/alerts?grid=a%00"),
    ("GET", "/api/v1/alerts?camera=%00&village=v1"),
    ("GET", "/api/v1/alerts/a%00b"),
    ("GET", "/api/v1/alerts/a%00b/snapshot"),
    ("GET", "/api/v1/incidents/a%00b"),
    ("GET", "/api/v1/incidents?grid=a%00"),
    ("POST", "/api/v1/alerts/a%00b/actions"),
    ("POST", "/api/v1/incidents/a%00b/actions"),
    ("PUT", "/api/v1/rules/a%00b"),
    ("DELETE", "/api/v1/rules/a%00b"),
    ("DELETE", "/api/v1/tokens/a%00b"),  # an auth route: the guard is in front of every route
]


@pytest.mark.parametrize(("method", "url"), NUL_IN_PATH_OR_QUERY)
def test_nul_in_a_path_or_query_is_a_client_error(
    on_db: tuple[TestClient, dict[str, str]], method: str, url: str
) -> None:
    client, _ = on_db
    body = {"action": "acknowledge"} if "actions" in url else {"labels": ["person"]}
    response = client.request(method, url, json=body if method in ("POST", "PUT") else None)
    assert response.status_code == 400, response.text
    assert "NUL" in response.json()["detail"]


@pytest.mark.parametrize(
    ("url", "body"),
    [  # 500s: NUL on PostgreSQL, a lone surrogate on both (UnicodeEncodeError in the driver)
        ("/api/v1/incidents/{incident}/actions", {"action": "acknowledge", "note": "a\x00b"}),
        ("/api/v1/incidents/{incident}/actions", {"action": "acknowledge", "note": "a\ud800b"}),
        ("/api/v1/alerts/{alert}/actions", {"action": "acknowledge", "user_id": "\udfff"}),
        (
            "/api/v1/push/subscriptions",
            {"subscription": {"endpoint": "https://push.example/\x00", "keys": {}}},
        ),
        ("/api/v1/login", {"username": "a\x00", "password": "x"}),
        ("/api/v1/login", {"username": "a", "password": "x", "\x00": 1}),  # keys are checked too (was 422)
    ],
)
def test_unstorable_text_in_a_json_body_is_a_client_error(
    on_db: tuple[TestClient, dict[str, str]], url: str, body: dict[str, Any]
) -> None:
    client, ids = on_db
    # json.dumps writes them as \u0000 and \ud800, the way a client sends them
    response = client.post(
        url.format(**ids), content=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text


def test_text_that_only_looks_unstorable_is_accepted(on_db: tuple[TestClient, dict[str, str]]) -> None:
    client, ids = on_db
    url = f"/api/v1/incidents/{ids['incident']}/actions"
    note = "a backslash-u 0000: \\u0000, and a fire: \U0001f525"  # escaped backslash; a surrogate *pair*
    response = client.post(url, content=json.dumps({"action": "acknowledge", "note": note}),
                           headers={"Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 200, response.text
    actions = client.get(f"/api/v1/incidents/{ids['incident']}").json()["actions"]
    assert actions[-1]["note"] == note
    assert client.get("/api/v1/alerts", params={"label": "100%"}).status_code == 200


def test_a_deeply_nested_body_is_a_client_error(on_db: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = on_db
    deep = b"[" * 200_000 + b"]" * 200_000  # RecursionError in the JSON parser
    response = client.put("/api/v1/rules/x", content=deep, headers={"Content-Type": "application/json"})
    assert response.status_code in (400, 422), response.text
