"""Object-level authorisation on every route, as a full matrix of role x route x object, on a real
database and a real S3 store: a patrol member sees only the cameras, alerts, clips,
snapshots, thumbnails, incidents and live-feed events of their team's grids, and gets 404 for the others,
exactly as for objects that do not exist; nobody gets anything without credentials."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from alerts.bus import BusMessage
from gridwatch.alerting import sync_organisation
from gridwatch.api import AppState, create_app
from gridwatch.api_scope import scope_of
from gridwatch.auth.principal import Principal
from gridwatch.services import S3Server
from gridwatch.settings import Settings
from storage.metadata import AlertRecord, CameraRecord, MetadataDB
from storage.objectstore import ObjectStore

T0 = datetime.now(UTC) - timedelta(hours=1)
GRIDS = {"a": "grid-a", "b": "grid-b"}


def _settings() -> Settings:
    return Settings.model_validate(
        {
            "villages": [{"id": "v1", "name": "V1"}],
            "teams": [{"id": "team-a", "name": "A"}, {"id": "team-b", "name": "B"}],
            "grids": [
                {"id": "grid-a", "name": "Grid A", "village": "v1", "team": "team-a"},
                {"id": "grid-b", "name": "Grid B", "village": "v1", "team": "team-b"},
            ],
            "rules": [{"name": "people", "labels": ["person"]}],
        }
    )


@pytest.fixture
def db(tmp_path: Path) -> Iterator[MetadataDB]:
    """SQLite only here (this module's 111 cases test the API's checks; the queries under them, grid
    filters included, run on both databases in tests/storage and test_api_incidents.py)."""
    database = MetadataDB(f"sqlite:///{tmp_path / 'authz.db'}")
    database.migrate()
    yield database
    database.close()


@pytest.fixture
def world(
    db: MetadataDB, s3_server: S3Server, s3_keys: tuple[str, str], api_token: Callable[..., str]
) -> Iterator[tuple[TestClient, dict[str, dict[str, str]], dict[str, dict[str, str]]]]:
    """A camera, an alert (with snapshot, thumbnail and clip) and an incident in each of two grids; users of
    every role. Yields the client, the users' headers and the objects' ids per grid."""
    settings = _settings()
    sync_organisation(settings, db)
    store = ObjectStore(s3_server.endpoint, *s3_keys, bucket="authz-test")
    store.ensure_bucket()
    objects: dict[str, dict[str, str]] = {}
    for side, grid in GRIDS.items():
        camera = f"cam-{side}"
        db.upsert_cameras([CameraRecord(camera, f"Camera {side}", "v1", grid, "rtsp://u:***@10.0.0.1/", 2.0)])
        alert_id = f"{ord(side):032x}"
        db.add_alert(AlertRecord(alert_id, camera, "v1", grid, "fire", 0.9, (1, 2, 3, 4), T0, T0))
        for kind, key in (
            ("snapshot", store.snapshot_key(camera, T0, alert_id)),
            ("thumbnail", f"thumbnails/{camera}/x/{alert_id}.jpg"),
            ("clip", f"clips/{camera}/x/{alert_id}.mp4"),
        ):
            store.put_bytes(key, b"data", "application/octet-stream")
            if kind == "snapshot":
                db.set_snapshot(alert_id, key)
            elif kind == "thumbnail":
                db.set_thumbnail(alert_id, key)
            else:
                db.set_clip(alert_id, key=key, status="stored", duration_s=5.0)
        incident = db.attach_alert_to_incident(
            alert_id=alert_id, camera_id=camera, village="v1", grid=grid, group="fire", label="fire",
            severity="critical", at=T0, window_s=600, team=f"team-{side}",
        ).incident  # fmt: skip
        objects[side] = {"camera": camera, "alert": alert_id, "incident": incident.id}
    users = {
        "admin": {"Authorization": api_token(db, "ada", "admin")},
        "operator": {"Authorization": api_token(db, "otto", "operator")},
        "patrol_a": {"Authorization": api_token(db, "pat", "patrol", "team-a")},
        "patrol_none": {"Authorization": api_token(db, "nobody", "patrol")},  # in no team: sees nothing
        "anonymous": {},
    }
    state = AppState(db, store, 30, settings=settings, publish=lambda _m: None)
    with TestClient(create_app(state), follow_redirects=False) as client:
        yield client, users, objects


# what each caller may see of grid a and grid b
SEES = {
    "admin": {"a": True, "b": True},
    "operator": {"a": True, "b": True},
    "patrol_a": {"a": True, "b": False},
    "patrol_none": {"a": False, "b": False},
}
OBJECT_ROUTES = [  # (method, path with {alert}/{incident}, success status)
    ("GET", "/api/v1/alerts/{alert}", 200),
    ("GET", "/api/v1/cameras/{camera}", 200),
    ("GET", "/api/v1/alerts/{alert}/snapshot", 307),
    ("GET", "/api/v1/alerts/{alert}/thumbnail", 307),
    ("GET", "/api/v1/alerts/{alert}/clip", 307),
    ("GET", "/api/v1/incidents/{incident}", 200),
    ("POST", "/api/v1/incidents/{incident}/actions", 200),
    ("POST", "/api/v1/alerts/{alert}/actions", 200),
]


@pytest.mark.parametrize("who", [*SEES, "anonymous"])
@pytest.mark.parametrize(("method", "path", "ok"), OBJECT_ROUTES)
@pytest.mark.parametrize("side", ["a", "b"])
def test_object_routes(
    world: tuple[TestClient, dict[str, dict[str, str]], dict[str, dict[str, str]]],
    who: str,
    method: str,
    path: str,
    ok: int,
    side: str,
) -> None:
    client, users, objects = world
    url = path.format(**objects[side])
    body = {"action": "acknowledge"} if method == "POST" else None
    r = client.request(method, url, headers=users[who], json=body)
    if who == "anonymous":
        assert r.status_code == 401, (url, r.text)
        return
    expected = ok if SEES[who][side] else 404
    assert r.status_code == expected, (who, url, r.status_code, r.text)
    if expected == 404:  # nothing about the object leaks: the same answer as for an id that does not exist
        missing = client.request(
            method,
            path.format(alert="f" * 32, incident="f" * 32, camera="no-such-camera"),
            headers=users[who],
            json=body,
        )
        assert (missing.status_code, missing.json()) == (r.status_code, r.json())
    if r.status_code == 307:
        assert "X-Amz-Signature" in r.headers["location"]


@pytest.mark.parametrize("who", [*SEES, "anonymous"])
@pytest.mark.parametrize(
    ("path", "key", "field"),
    [
        ("/api/v1/cameras", None, "id"),
        ("/api/v1/alerts", "items", "id"),
        ("/api/v1/incidents", None, "id"),
        ("/api/v1/stats/response-times", None, "grid"),
    ],
)
def test_list_routes_show_only_what_the_caller_may_see(
    world: tuple[TestClient, dict[str, dict[str, str]], dict[str, dict[str, str]]],
    who: str,
    path: str,
    key: str | None,
    field: str,
) -> None:
    client, users, objects = world
    r = client.get(path, headers=users[who])
    if who == "anonymous":
        assert r.status_code == 401
        return
    assert r.status_code == 200, r.text
    items = r.json()[key] if key else r.json()
    listed = {item[field] for item in items}
    want_of = {
        "/api/v1/cameras": lambda side: objects[side]["camera"],
        "/api/v1/alerts": lambda side: objects[side]["alert"],
        "/api/v1/incidents": lambda side: objects[side]["incident"],
        "/api/v1/stats/response-times": lambda side: GRIDS[side],
    }[path]
    assert listed == {want_of(side) for side in ("a", "b") if SEES[who][side]}
    # asking for the other grid explicitly does not widen the view
    if path in ("/api/v1/alerts", "/api/v1/incidents"):
        r = client.get(path, headers=users[who], params={"grid": "grid-b"})
        items = r.json()[key] if key else r.json()
        assert bool(items) == SEES[who]["b"]


@pytest.mark.parametrize(
    ("who", "method", "path", "expected"),
    [
        ("admin", "GET", "/api/v1/rules", 200),
        ("operator", "GET", "/api/v1/rules", 200),
        ("patrol_a", "GET", "/api/v1/rules", 403),
        ("anonymous", "GET", "/api/v1/rules", 401),
        ("admin", "PUT", "/api/v1/rules/night", 200),
        ("operator", "PUT", "/api/v1/rules/night", 403),
        ("patrol_a", "PUT", "/api/v1/rules/night", 403),
        ("anonymous", "PUT", "/api/v1/rules/night", 401),
        ("operator", "DELETE", "/api/v1/rules/people", 403),
        ("patrol_a", "DELETE", "/api/v1/rules/people", 403),
        ("admin", "GET", "/metrics", 404),  # this test app has no metrics; staff may reach the route
        ("operator", "GET", "/metrics", 404),
        ("patrol_a", "GET", "/metrics", 403),
        ("anonymous", "GET", "/metrics", 401),
        ("anonymous", "GET", "/healthz", 200),
        ("anonymous", "GET", "/readyz", 200),
        ("anonymous", "GET", "/api/v1/feed", 401),
        ("patrol_a", "GET", "/api/v1/push/key", 404),  # logged in; no Web Push configured here
        ("anonymous", "GET", "/api/v1/push/key", 401),
        ("anonymous", "POST", "/api/v1/push/subscriptions", 401),
        # the registry: admins write (tests/gridwatch/test_api_cameras.py, test_api_org.py), everyone reads
        # what is theirs
        *[
            (who, method, path, 403 if who != "anonymous" else 401)
            for who in ("operator", "patrol_a", "anonymous")
            for method, path in [
                ("POST", "/api/v1/cameras"),
                ("PATCH", "/api/v1/cameras/cam-a"),
                ("DELETE", "/api/v1/cameras/cam-a"),
                ("POST", "/api/v1/cameras/cam-a/probe"),
                ("POST", "/api/v1/cameras/import"),
                ("POST", "/api/v1/villages"),
                ("PATCH", "/api/v1/villages/v1"),
                ("DELETE", "/api/v1/villages/v1"),
                ("POST", "/api/v1/grids"),
                ("PATCH", "/api/v1/grids/grid-a"),
                ("DELETE", "/api/v1/grids/grid-a"),
                ("POST", "/api/v1/teams"),
                ("PATCH", "/api/v1/teams/team-a"),
                ("DELETE", "/api/v1/teams/team-a"),
                ("GET", "/api/v1/users"),
                ("POST", "/api/v1/users"),
                ("PATCH", "/api/v1/users/otto"),
                ("DELETE", "/api/v1/users/otto"),
            ]
        ],
        *[
            (who, "GET", path, 200 if who != "anonymous" else 401)
            for who in ("admin", "operator", "patrol_a", "anonymous")
            for path in ("/api/v1/villages", "/api/v1/grids", "/api/v1/teams")
        ],
        # a picture of a camera now: staff only (this world's cameras have no URL to open: 409)
        ("admin", "GET", "/api/v1/cameras/cam-a/frame", 409),
        ("operator", "GET", "/api/v1/cameras/cam-b/frame", 409),
        ("patrol_a", "GET", "/api/v1/cameras/cam-a/frame", 403),
        ("anonymous", "GET", "/api/v1/cameras/cam-a/frame", 401),
        ("patrol_a", "GET", "/api/v1/teams/team-a", 200),
        ("patrol_a", "GET", "/api/v1/teams/team-b", 404),
        ("operator", "GET", "/api/v1/teams/team-b", 200),
        ("anonymous", "GET", "/api/v1/teams/team-a", 401),
        ("admin", "GET", "/api/v1/users", 200),
    ],
)
def test_role_routes(
    world: tuple[TestClient, dict[str, dict[str, str]], dict[str, dict[str, str]]],
    who: str,
    method: str,
    path: str,
    expected: int,
) -> None:
    client, users, _ = world
    body = {"labels": ["person"]} if method == "PUT" else None
    r = client.request(method, path, headers=users[who], json=body)
    assert r.status_code == expected, (who, method, path, r.text)


def test_every_route_is_in_the_matrix(
    world: tuple[TestClient, dict[str, dict[str, str]], dict[str, dict[str, str]]],
) -> None:
    """A new route must be added to this matrix (and so get its authorisation decided) before it ships."""
    client, _, _ = world
    covered = {path for _, path, _ in OBJECT_ROUTES} | {
        "/api/v1/cameras", "/api/v1/alerts", "/api/v1/incidents", "/api/v1/stats/response-times",
        "/api/v1/rules", "/api/v1/rules/{name}", "/metrics", "/healthz", "/api/v1/feed", "/api/v1/push/key",
        "/api/v1/push/subscriptions", "/readyz",
        # the registry
        "/api/v1/cameras/import", "/api/v1/cameras/{camera_id}/probe", "/api/v1/cameras/{camera_id}/frame",
        "/api/v1/villages",
        "/api/v1/villages/{village_id}", "/api/v1/grids", "/api/v1/grids/{grid_id}", "/api/v1/teams",
        "/api/v1/teams/{team_id}", "/api/v1/users", "/api/v1/users/{user_id}",
        # authentication's own routes (tests/gridwatch/test_auth.py)
        "/api/v1/login", "/api/v1/logout", "/api/v1/session", "/api/v1/tokens", "/api/v1/tokens/{token_id}",
        "/api/v1/setup",
    }  # fmt: skip
    covered = {
        p.replace("{alert}", "{alert_id}")
        .replace("{incident}", "{incident_id}")
        .replace("{camera}", "{camera_id}")
        for p in covered
    }
    # the OpenAPI document lists every route, those of included routers too (app.routes holds those as
    # one opaque entry per router since FastAPI 0.16x, which once let new routes slip past this check)
    routes = set(client.app.openapi()["paths"])  # type: ignore[attr-defined]
    assert "/api/v1/login" in routes and len(routes) > 30
    assert routes - covered == set()


def test_the_live_feed_shows_a_patrol_member_only_their_grids(db: MetadataDB) -> None:
    sync_organisation(_settings(), db)
    from gridwatch.api_state import AppState as State

    state = State(db, ObjectStore("127.0.0.1:9", "k", "s", "unused"), 30)
    scope = scope_of(Principal("pat", "patrol", "team-a", "token"), state)
    seen = [
        scope.sees(BusMessage(f"{i:032x}", "alert", "c", "v1", grid, "fire", 0.9, T0.isoformat()).grid)
        for i, grid in enumerate(("grid-a", "grid-b"))
    ]
    assert seen == [True, False]
    everyone = scope_of(Principal("otto", "operator", None, "token"), state)
    assert everyone.sees("grid-b") and everyone.within(None) is None
    assert scope.within(["grid-a", "grid-b"]) == ["grid-a"] and scope.within(None) == ["grid-a"]
