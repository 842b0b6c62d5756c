"""Villages, grids, teams (members and rosters) and users through the API, on SQLite and PostgreSQL: admins
create, change and delete what the API made; the config's objects are read-only; deletes of things in use
are refused; patrol members see only their own; and the dispatcher routes by what the database says."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gridwatch.alerting import LiveRouter, sync_organisation
from gridwatch.api import create_app
from gridwatch.api_state import AppState
from gridwatch.settings import Settings
from storage.metadata import MetadataDB
from storage.objectstore import ObjectStore

Headers = dict[str, dict[str, str]]


def _settings(tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "data_dir": str(tmp_path),
            "schedules": [
                {
                    "name": "days",
                    "windows": [
                        {
                            "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                            "start": "08:00",
                            "end": "20:00",
                        }
                    ],
                }
            ],
            "villages": [{"id": "v1", "name": "East"}],
            "teams": [{"id": "team-a", "name": "A"}],
            "grids": [{"id": "grid-a", "name": "A", "village": "v1", "team": "team-a"}],
            "routing": {"fallback_team": "team-a"},
        }
    )


@pytest.fixture
def world(
    db: MetadataDB, tmp_path: Path, role_headers: Callable[[MetadataDB], Headers]
) -> Iterator[tuple[TestClient, Headers, AppState]]:
    settings = _settings(tmp_path)
    sync_organisation(settings, db)
    state = AppState(db, ObjectStore("127.0.0.1:9", "k", "s", "unused"), 30, settings=settings)
    users = role_headers(db)
    with TestClient(create_app(state)) as client:
        yield client, users, state


def test_an_admin_builds_a_village_grid_team_and_user_and_routing_follows(
    world: tuple[TestClient, Headers, AppState],
) -> None:
    client, users, state = world
    admin = users["admin"]
    assert (
        client.post("/api/v1/villages", headers=admin, json={"id": "v2", "name": "West"}).status_code == 201
    )
    assert (
        client.post("/api/v1/teams", headers=admin, json={"id": "team-w", "name": "West patrol"}).status_code
        == 201
    )
    r = client.post(
        "/api/v1/grids", headers=admin, json={"id": "grid-w", "name": "W", "village": "v2", "team": "team-w"}
    )
    assert r.status_code == 201 and r.json() == {
        "id": "grid-w",
        "name": "W",
        "village": "v2",
        "team": "team-w",
        "source": "api",
    }
    r = client.post(
        "/api/v1/users",
        headers=admin,
        json={
            "id": "wang",
            "name": "Wang",
            "role": "patrol",
            "team": "team-w",
            "password": "long-enough-pw-1",
        },
    )
    assert r.status_code == 201, r.text
    assert r.json() == {
        "id": "wang",
        "name": "Wang",
        "role": "patrol",
        "team": "team-w",
        "disabled": False,
        "source": "api",
        "has_password": True,
    }
    assert "long-enough" not in r.text
    r = client.patch(
        "/api/v1/teams/team-w", headers=admin, json={"roster": [{"user": "wang", "schedule": "days"}]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["members"] == ["wang"] and r.json()["roster"] == [{"user": "wang", "schedule": "days"}]

    # the dispatcher's router sees the new grid, its team and the roster
    assert state.settings is not None
    router = LiveRouter(state.settings, state.db)
    noon = datetime(2026, 12, 1, 12, 0, tzinfo=UTC).timestamp()
    night = datetime(2026, 12, 1, 23, 0, tzinfo=UTC).timestamp()
    route = router.route("grid-w", noon)
    assert (route.team, route.on_duty) == ("team-w", ("wang",))
    assert router.route("grid-w", night).team == "team-a"  # nobody on duty: the fallback team
    # the new user logs in and sees their grid only
    login = client.post("/api/v1/login", json={"username": "wang", "password": "long-enough-pw-1"})
    assert login.status_code == 200, login.text
    assert [g["id"] for g in client.get("/api/v1/grids").json()] == ["grid-w"]
    assert [v["id"] for v in client.get("/api/v1/villages").json()] == ["v2"]
    assert [t["id"] for t in client.get("/api/v1/teams").json()] == ["team-w"]
    client.cookies.clear()
    actions = [a.action for a in state.db.list_audit()]
    assert {"village.create", "team.create", "grid.create", "user.create", "team.update"} <= set(actions)


def test_deletes_of_things_in_use_are_refused_and_then_allowed(
    world: tuple[TestClient, Headers, AppState],
) -> None:
    client, users, state = world
    admin = users["admin"]
    client.post("/api/v1/villages", headers=admin, json={"id": "v2", "name": "West"})
    client.post("/api/v1/teams", headers=admin, json={"id": "team-w", "name": "W"})
    client.post(
        "/api/v1/grids", headers=admin, json={"id": "grid-w", "name": "W", "village": "v2", "team": "team-w"}
    )
    cam = {"id": "cw", "name": "C", "grid": "grid-w", "url": "rtsp://10.0.0.1/"}
    assert client.post("/api/v1/cameras?probe=false", headers=admin, json=cam).status_code == 201
    r = client.delete("/api/v1/villages/v2", headers=admin)
    assert r.status_code == 409 and "grid-w" in r.json()["detail"]
    r = client.delete("/api/v1/grids/grid-w", headers=admin)
    assert r.status_code == 409 and "cw" in r.json()["detail"]
    assert client.delete("/api/v1/teams/team-w", headers=admin).status_code == 409
    r = client.patch("/api/v1/grids/grid-w", headers=admin, json={"village": "v1"})
    assert r.status_code == 409  # its cameras would be in the wrong village
    assert client.delete("/api/v1/cameras/cw", headers=admin).status_code == 204
    assert client.patch("/api/v1/grids/grid-w", headers=admin, json={"team": None}).json()["team"] is None
    assert client.delete("/api/v1/teams/team-w", headers=admin).status_code == 204
    assert client.delete("/api/v1/grids/grid-w", headers=admin).status_code == 204
    assert client.delete("/api/v1/villages/v2", headers=admin).status_code == 204
    assert state.db.get_village("v2") is None
    assert client.delete("/api/v1/villages/v2", headers=admin).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PATCH", "/api/v1/villages/v1", {"name": "Z"}),
        ("DELETE", "/api/v1/villages/v1", None),
        ("PATCH", "/api/v1/grids/grid-a", {"name": "Z"}),
        ("DELETE", "/api/v1/grids/grid-a", None),
        ("PATCH", "/api/v1/teams/team-a", {"name": "Z"}),
        ("DELETE", "/api/v1/teams/team-a", None),
    ],
)
def test_the_configs_objects_are_read_only(
    world: tuple[TestClient, Headers, AppState], method: str, path: str, body: dict[str, str] | None
) -> None:
    client, users, _ = world
    r = client.request(method, path, headers=users["admin"], json=body)
    assert r.status_code == 409 and "config" in r.json()["detail"], r.text


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/grids", {"id": "g", "name": "G", "village": "nowhere"}, "village"),
        ("/api/v1/grids", {"id": "g", "name": "G", "village": "v1", "team": "nobody"}, "team"),
        ("/api/v1/users", {"id": "u", "name": "U", "role": "root", "password": "long-enough-pw-1"}, "role"),
        (
            "/api/v1/users",
            {"id": "u", "name": "U", "role": "patrol", "team": "x", "password": "long-enough-pw-1"},
            "team",
        ),
        ("/api/v1/users", {"id": "u", "name": "U", "role": "patrol", "password": "short"}, "password"),
    ],
)
def test_bad_references_are_422_with_the_field(
    world: tuple[TestClient, Headers, AppState], path: str, body: dict[str, str], field: str
) -> None:
    client, users, _ = world
    r = client.post(path, headers=users["admin"], json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["field"] == field


def test_ids_taken_are_409(world: tuple[TestClient, Headers, AppState]) -> None:
    client, users, _ = world
    admin = users["admin"]
    assert (
        client.post("/api/v1/villages", headers=admin, json={"id": "v1", "name": "again"}).status_code == 409
    )
    assert (
        client.post("/api/v1/teams", headers=admin, json={"id": "team-a", "name": "again"}).status_code == 409
    )
    body = {"id": "otto", "name": "O", "role": "operator", "password": "long-enough-pw-1"}
    assert client.post("/api/v1/users", headers=admin, json=body).status_code == 409


def test_users_are_disabled_not_deleted_and_the_last_admin_stays(
    world: tuple[TestClient, Headers, AppState],
) -> None:
    client, users, state = world
    admin = users["admin"]
    body = {"id": "li", "name": "Li", "role": "operator", "password": "long-enough-pw-1"}
    client.post("/api/v1/users", headers=admin, json=body)
    assert (
        client.post("/api/v1/login", json={"username": "li", "password": "long-enough-pw-1"}).status_code
        == 200
    )
    assert client.get("/api/v1/session").status_code == 200
    assert client.delete("/api/v1/users/li", headers=admin).status_code == 204
    assert client.get("/api/v1/session").status_code == 401  # the session ended
    client.cookies.clear()
    user = state.db.get_user("li")
    assert user is not None and user.disabled
    assert (
        client.patch("/api/v1/users/li", headers=admin, json={"disabled": False}).json()["disabled"] is False
    )
    r = client.patch(
        "/api/v1/users/li", headers=admin, json={"password": "another-long-pw-2", "role": "admin"}
    )
    assert r.status_code == 200 and r.json()["role"] == "admin"
    assert (
        client.post("/api/v1/login", json={"username": "li", "password": "another-long-pw-2"}).status_code
        == 200
    )
    client.cookies.clear()
    assert client.delete("/api/v1/users/ada", headers=admin).status_code == 409  # not yourself
    # "ada" has a token but no password: li is the only admin who can log in
    assert client.patch("/api/v1/users/li", headers=admin, json={"role": "operator"}).status_code == 409
    assert client.delete("/api/v1/users/li", headers=admin).status_code == 409


@pytest.mark.parametrize("who", ["operator", "patrol_a"])
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/villages", {"id": "v9", "name": "N"}),
        ("POST", "/api/v1/grids", {"id": "g9", "name": "N", "village": "v1"}),
        ("POST", "/api/v1/teams", {"id": "t9", "name": "N"}),
        ("POST", "/api/v1/users", {"id": "u9", "name": "N", "role": "admin", "password": "long-enough-pw-1"}),
        ("PATCH", "/api/v1/users/otto", {"role": "admin"}),
        ("DELETE", "/api/v1/users/ada", None),
        ("GET", "/api/v1/users", None),
    ],
)
def test_only_admins_change_the_organisation(
    world: tuple[TestClient, Headers, AppState], who: str, method: str, path: str, body: dict[str, str] | None
) -> None:
    client, users, state = world
    r = client.request(method, path, headers=users[who], json=body)
    assert r.status_code == 403, r.text
    otto = state.db.get_user("otto")
    assert otto is not None and otto.role == "operator"


def test_a_patrol_member_sees_their_own_team_only(world: tuple[TestClient, Headers, AppState]) -> None:
    client, users, _ = world
    client.post("/api/v1/teams", headers=users["admin"], json={"id": "team-w", "name": "W"})
    assert [t["id"] for t in client.get("/api/v1/teams", headers=users["patrol_a"]).json()] == ["team-a"]
    assert client.get("/api/v1/teams/team-w", headers=users["patrol_a"]).status_code == 404
    assert client.get("/api/v1/teams/team-w", headers=users["operator"]).status_code == 200
    assert client.get("/api/v1/teams/team-a", headers=users["patrol_a"]).json()["members"] == ["pat"]
