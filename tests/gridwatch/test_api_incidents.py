"""The alert side's HTTP routes on a real database (SQLite and PostgreSQL): incidents and their lifecycle,
response times, rules edited through the API (validated, picked up by a running rule engine), push
subscriptions."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from alerts.bus import BusMessage
from alerts.notifiers.settings import parse_notifier_settings
from alerts.rules import RuleEngine
from gridwatch.alerting import RuleWatcher, build_rules, sync_organisation
from gridwatch.api import AppState, create_app
from gridwatch.settings import Settings
from storage.metadata import AlertRecord, MetadataDB
from storage.objectstore import ObjectStore

T0 = datetime.now(UTC) - timedelta(hours=1)


def _settings() -> Settings:
    return Settings.model_validate(
        {
            "villages": [{"id": "v1", "name": "Village"}],
            "teams": [{"id": "east", "name": "East patrol", "members": ["li"]}],
            "users": [{"id": "li", "name": "Li", "role": "patrol", "team": "east"}],
            "grids": [{"id": "g1", "name": "Grid 1", "village": "v1", "team": "east"}],
            "schedules": [{"name": "nights", "windows": [{"start": "19:00", "end": "06:00"}]}],
            "cameras": [
                {
                    "id": "cam1",
                    "name": "Gate",
                    "village": "v1",
                    "grid": "g1",
                    "url": "rtsp://admin:cam-password@10.0.0.9/ch1",
                    "zones": [{"name": "yard", "polygon": [[0, 0], [1, 0], [1, 1]]}],
                }
            ],
            "rules": [{"name": "people", "labels": ["person"], "min_score": 0.5}],
        }
    )


class Published(list[BusMessage]):
    def __call__(self, message: BusMessage) -> None:
        self.append(message)


@pytest.fixture
def app(db: MetadataDB, api_token: Callable[..., str]) -> Iterator[tuple[TestClient, AppState, Published]]:
    """A client logged in as an admin (pass `headers=li` for the patrol member of grid g1)."""
    settings = _settings()
    sync_organisation(settings, db)
    published = Published()
    store = ObjectStore("127.0.0.1:9", "k", "secret-key", "unused")  # not reached by these routes
    state = AppState(db, store, 30, settings=settings, publish=published)
    with TestClient(create_app(state), headers={"Authorization": api_token(db, "boss", "admin")}) as client:
        yield client, state, published


@pytest.fixture
def li(app: tuple[TestClient, AppState, Published], api_token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": api_token(app[1].db, "li", "patrol", "east")}


def _incident(db: MetadataDB, label: str = "fire", at: datetime = T0) -> tuple[str, str]:
    alert_id = f"{int(at.timestamp() * 1000):032x}"
    db.add_alert(
        AlertRecord(alert_id, "cam1", "v1", "g1", label, 0.9, (1, 2, 3, 4), at, at, severity="critical")
    )
    joined = db.attach_alert_to_incident(
        alert_id=alert_id, camera_id="cam1", village="v1", grid="g1", group=label, label=label,
        severity="critical", at=at, window_s=600, team="east",
    )  # fmt: skip
    return joined.incident.id, alert_id


def test_incidents_are_listed_and_shown_with_their_alerts(
    app: tuple[TestClient, AppState, Published],
) -> None:
    client, state, _ = app
    incident_id, alert_id = _incident(state.db)
    listed = client.get("/api/v1/incidents", params={"status": "new"}).json()
    assert [i["id"] for i in listed] == [incident_id]
    assert listed[0]["team"] == "east" and listed[0]["severity"] == "critical"
    detail = client.get(f"/api/v1/incidents/{incident_id}").json()
    assert detail["alert_ids"] == [alert_id] and detail["actions"] == []
    assert client.get("/api/v1/incidents/nope").status_code == 404
    assert client.get("/api/v1/incidents/" + "x" * 500).status_code == 404
    assert client.get("/api/v1/incidents", params={"status": "exploded"}).status_code == 422


def test_the_lifecycle_through_the_api(
    app: tuple[TestClient, AppState, Published], li: dict[str, str]
) -> None:
    client, state, published = app
    incident_id, alert_id = _incident(state.db)
    ack = client.post(f"/api/v1/alerts/{alert_id}/actions", json={"action": "acknowledge"}, headers=li)
    assert ack.status_code == 200 and ack.json()["status"] == "acknowledged"
    again = client.post(f"/api/v1/incidents/{incident_id}/actions", json={"action": "acknowledge"})
    assert again.status_code == 409 and "already acknowledged" in again.json()["detail"]
    assert (
        client.post(f"/api/v1/incidents/{incident_id}/actions", json={"action": "explode"}).status_code == 409
    )
    who = client.post(f"/api/v1/incidents/{incident_id}/actions", json={"action": "dispatch", "user_id": "x"})
    assert who.status_code == 422  # who acts is the caller, never the body
    extra = client.post(
        f"/api/v1/incidents/{incident_id}/actions", json={"action": "dispatch", "admin": True}
    )
    assert extra.status_code == 422
    long_note = client.post(
        f"/api/v1/incidents/{incident_id}/actions", json={"action": "dispatch", "note": "x" * 5000}
    )
    assert long_note.status_code == 422
    for action in ("dispatch", "on_scene", "resolve"):
        r = client.post(
            f"/api/v1/incidents/{incident_id}/actions",
            json={"action": action, "note": action},
            headers=li,
        )
        assert r.status_code == 200, r.text
    detail = client.get(f"/api/v1/incidents/{incident_id}").json()
    assert [(a["action"], a["user_id"]) for a in detail["actions"]] == [
        ("acknowledged", "li"),
        ("dispatched", "li"),
        ("on_scene", "li"),
        ("resolved", "li"),
    ]
    assert detail["closed_at"] is not None
    assert [(m.kind, m.status, m.incident_id) for m in published][-1] == ("incident", "resolved", incident_id)
    assert [m.status for m in published] == ["acknowledged", "dispatched", "on_scene", "resolved"]
    times = client.get("/api/v1/stats/response-times").json()
    assert [(t["grid"], t["incidents"], t["acknowledged"], t["on_scene"]) for t in times] == [("g1", 1, 1, 1)]
    assert times[0]["median_ack_s"] > 0


def test_an_alert_not_dispatched_yet_cannot_be_acted_on(app: tuple[TestClient, AppState, Published]) -> None:
    client, state, _ = app
    state.db.add_alert(AlertRecord("a" * 32, "cam1", "v1", "g1", "person", 0.9, (1, 2, 3, 4), T0, T0))
    r = client.post(f"/api/v1/alerts/{'a' * 32}/actions", json={"action": "acknowledge"})
    assert r.status_code == 409
    assert client.post("/api/v1/alerts/nope/actions", json={"action": "acknowledge"}).status_code == 404


def test_rules_are_edited_validated_and_reach_a_running_engine(
    app: tuple[TestClient, AppState, Published],
) -> None:
    client, state, _ = app
    assert state.settings is not None
    engine = RuleEngine(build_rules(state.settings))
    watcher = RuleWatcher(state.settings, state.db, engine)
    assert watcher.check() is False  # nothing edited: the engine already has the YAML rules
    assert [(r["source"], r["rule"]["name"]) for r in client.get("/api/v1/rules").json()] == [
        ("yaml", "people")
    ]

    bad = client.put(
        "/api/v1/rules/night-yard", json={"labels": ["person"], "cameras": ["ghost"], "zones": ["moon"]}
    )
    assert bad.status_code == 422
    detail = " ".join(bad.json()["detail"])
    assert "unknown camera 'ghost'" in detail and "zone 'moon'" in detail
    typo = client.put("/api/v1/rules/night-yard", json={"labels": ["person"], "min_scroe": 0.5})
    assert typo.status_code == 422 and "min_scroe" in json.dumps(typo.json())
    assert client.put("/api/v1/rules/x", json={"name": "y", "labels": ["person"]}).status_code == 422

    rule = {
        "labels": ["person"],
        "zones": ["yard"],
        "schedules": ["nights"],
        "severity": "high",
        "min_score": 0.6,
    }
    ok = client.put("/api/v1/rules/night-yard", json=rule)
    assert ok.status_code == 200, ok.text
    off = client.put("/api/v1/rules/people", json={"labels": ["person"], "enabled": False})
    assert off.status_code == 200
    listed = {r["rule"]["name"]: r for r in client.get("/api/v1/rules").json()}
    assert listed["night-yard"]["source"] == "api" and listed["night-yard"]["rule"]["severity"] == "high"
    assert listed["people"]["source"] == "api" and listed["people"]["rule"]["enabled"] is False

    assert watcher.check() is True
    assert [r.name for r in engine.rules] == ["night-yard"]  # "people" is off
    assert engine.rules[0].severity == "high" and engine.rules[0].schedules[0].name == "nights"
    assert watcher.check() is False  # unchanged

    assert client.delete("/api/v1/rules/people").status_code == 204
    assert client.delete("/api/v1/rules/people").status_code == 404
    assert watcher.check() is True
    assert sorted(r.name for r in engine.rules) == ["night-yard", "people"]
    assert [a.action for a in state.db.list_audit(limit=10)].count("rule.put") == 2


def test_push_subscriptions_are_the_callers(
    app: tuple[TestClient, AppState, Published], li: dict[str, str]
) -> None:
    client, state, _ = app
    sub = {"endpoint": "https://push.example/wpush/abc", "keys": {"p256dh": "x", "auth": "y"}}
    r = client.post("/api/v1/push/subscriptions", json={"subscription": sub}, headers=li)
    assert r.status_code == 201
    [stored] = state.db.list_push_subscriptions(user_ids=["li"])
    assert json.loads(stored.subscription_json) == sub
    # the same endpoint again replaces it (a phone that subscribed again)
    assert (
        client.post("/api/v1/push/subscriptions", json={"subscription": sub}, headers=li).status_code == 201
    )
    assert len(state.db.list_push_subscriptions(user_ids=["li"])) == 1
    assert (
        client.post("/api/v1/push/subscriptions", json={"user_id": "boss", "subscription": sub}).status_code
        == 422  # not for someone else
    )
    bad = {"endpoint": "javascript:alert(1)", "keys": {}}
    assert (
        client.post("/api/v1/push/subscriptions", json={"subscription": bad}, headers=li).status_code == 422
    )


def test_the_vapid_public_key_is_served_for_browsers_to_subscribe(
    db: MetadataDB, api_token: Callable[..., str]
) -> None:
    from alerts.notifiers.webpush import VapidKeys

    keys = VapidKeys.generate()
    settings = _settings().model_copy(
        update={
            "notifiers": [
                parse_notifier_settings(
                    {
                        "type": "webpush",
                        "name": "push",
                        "vapid_private_key": keys.private_base64(),
                        "subject": "mailto:ops@example.org",
                    }
                )
            ]
        }
    )
    store = ObjectStore("127.0.0.1:9", "k", "secret-key", "unused")
    headers = {"Authorization": api_token(db, "li", "patrol")}
    with TestClient(create_app(AppState(db, store, 30, settings=settings)), headers=headers) as client:
        r = client.get("/api/v1/push/key")
        assert r.json() == {"application_server_key": keys.application_server_key}
        assert keys.private_base64() not in r.text
    with TestClient(create_app(AppState(db, store, 30, settings=_settings())), headers=headers) as client:
        assert client.get("/api/v1/push/key").status_code == 404


def test_alerts_are_filtered_through_the_api(app: tuple[TestClient, AppState, Published]) -> None:
    client, state, _ = app
    incident_id, fire_id = _incident(state.db, "fire", T0)
    state.db.add_alert(AlertRecord("b" * 32, "cam1", "v1", "g1", "person", 0.9, (1, 2, 3, 4), T0, T0))

    def ids(**params: Any) -> list[str]:
        r = client.get("/api/v1/alerts", params=params)
        assert r.status_code == 200, r.text
        return [a["id"] for a in r.json()["items"]]

    assert ids(label="fire") == [fire_id]
    assert ids(severity="critical") == [fire_id]
    assert ids(label=["fire", "person"], grid="g1") == ["b" * 32, fire_id]  # same time: by id, descending
    assert ids(status="new", label="person") == ["b" * 32]
    assert ids(grid="elsewhere") == []
    later = (T0 + timedelta(seconds=1)).isoformat()
    assert ids(until=later) == ["b" * 32, fire_id]
    assert ids(since=later) == []
    detail = client.get(f"/api/v1/alerts/{fire_id}").json()
    assert (detail["severity"], detail["incident_id"]) == ("critical", incident_id)
    assert client.get("/api/v1/alerts", params={"status": "exploded"}).status_code == 422
    assert client.get("/api/v1/alerts", params={"since": "2026-01-01T00:00:00"}).status_code == 422  # no zone
