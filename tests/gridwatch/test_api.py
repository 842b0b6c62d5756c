"""The HTTP API against a real SQLite database and a real SeaweedFS S3 server."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gridwatch.api import AppState, create_app
from gridwatch.services import S3Server
from storage.metadata import AlertRecord, CameraRecord, MetadataDB
from storage.objectstore import ObjectStore

T0 = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)


@pytest.fixture()
def state(tmp_path: Path, s3_server: S3Server, s3_keys: tuple[str, str]) -> Iterator[AppState]:
    db = MetadataDB(f"sqlite:///{tmp_path / 'api.db'}")
    db.create_schema()
    store = ObjectStore(s3_server.endpoint, *s3_keys, bucket="api-test")
    store.ensure_bucket()
    db.upsert_cameras([CameraRecord("cam1", "Gate", "v1", "g1", "rtsp://admin:***@10.0.0.9/ch1", 2.0)])
    for i in range(7):
        alert_id = f"{i:032x}"
        created = T0 + timedelta(minutes=i)
        db.add_alert(
            AlertRecord(
                id=alert_id,
                camera_id="cam1",
                village="v1",
                grid="g1",
                label="person",
                score=0.8,
                bbox=(1.0, 2.0, 3.0, 4.0),
                created_at=created,
                frame_time=created,
            )
        )
    key = store.snapshot_key("cam1", T0, f"{0:032x}")
    store.put_bytes(key, b"\xff\xd8fakejpeg", "image/jpeg")
    db.set_snapshot(f"{0:032x}", key)
    health = {"detect": {"state": "online", "input_fps": 10.0}}
    yield AppState(db, store, presign_seconds=30, camera_health=lambda cid: health if cid == "cam1" else None)
    db.close()


@pytest.fixture
def headers(state: AppState, api_token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": api_token(state.db, "op", "operator")}


def test_health_and_cameras(state: AppState, headers: dict[str, str]) -> None:
    with TestClient(create_app(state), headers=headers) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        cameras = client.get("/api/v1/cameras").json()
        for camera in cameras:
            assert camera.pop("updated_at") and camera.pop("created_at") is None  # written before 0008
        assert cameras == [
            {
                "id": "cam1",
                "name": "Gate",
                "village": "v1",
                "grid": "g1",
                "url": "rtsp://admin:***@10.0.0.9/ch1",
                "detect_fps": 2.0,
                "enabled": True,
                "state": "online",
                "health": {"detect": {"state": "online", "input_fps": 10.0}},
                "record_url": None,
                "source": "config",
                "probe": None,
                "detection": None,
            }
        ]


def test_alerts_newest_first_with_cursor_pagination(state: AppState, headers: dict[str, str]) -> None:
    with TestClient(create_app(state), headers=headers) as client:
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
            body = client.get("/api/v1/alerts", params=params).json()
            seen += [a["id"] for a in body["items"]]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert pages == 3
        assert seen == [f"{i:032x}" for i in reversed(range(7))]


def test_alert_detail_snapshot_redirect_and_errors(state: AppState, headers: dict[str, str]) -> None:
    with TestClient(create_app(state), headers=headers, follow_redirects=False) as client:
        first = f"{0:032x}"
        detail = client.get(f"/api/v1/alerts/{first}").json()
        assert detail["snapshot_url"] == f"/api/v1/alerts/{first}/snapshot"
        assert detail["clip_url"] is None and detail["clip_status"] == "pending"
        response = client.get(f"/api/v1/alerts/{first}/snapshot")
        assert response.status_code == 307
        with urllib.request.urlopen(response.headers["location"], timeout=10) as resp:
            assert resp.read() == b"\xff\xd8fakejpeg"
        pending = client.get(f"/api/v1/alerts/{first}/clip")
        assert pending.status_code == 404 and "still being recorded" in pending.json()["detail"]
        assert client.get(f"/api/v1/alerts/{1:032x}/snapshot").status_code == 404
        assert client.get("/api/v1/alerts/nope").status_code == 404
        assert client.get("/api/v1/alerts/" + "x" * 5000).status_code == 404
        assert client.get("/api/v1/alerts", params={"cursor": "%%%"}).status_code == 400
        assert client.get("/api/v1/alerts", params={"limit": 0}).status_code == 422
        assert client.get("/api/v1/alerts", params={"limit": 10_000}).status_code == 422


def test_thumbnail_redirect_and_url(state: AppState, headers: dict[str, str]) -> None:
    first, second = f"{0:032x}", f"{1:032x}"
    key = state.store.thumbnail_key("cam1", T0, first)
    assert key == f"thumbnails/cam1/2026/11/28/{first}.jpg"
    state.store.put_bytes(key, b"\xff\xd8small", "image/jpeg")
    state.db.set_thumbnail(first, key)
    with TestClient(create_app(state), headers=headers, follow_redirects=False) as client:
        assert (
            client.get(f"/api/v1/alerts/{first}").json()["thumbnail_url"]
            == f"/api/v1/alerts/{first}/thumbnail"
        )
        listed = {a["id"]: a["thumbnail_url"] for a in client.get("/api/v1/alerts").json()["items"]}
        assert listed[first] is not None and listed[second] is None
        response = client.get(f"/api/v1/alerts/{first}/thumbnail")
        assert response.status_code == 307
        with urllib.request.urlopen(response.headers["location"], timeout=10) as resp:
            assert resp.read() == b"\xff\xd8small"
        assert client.get(f"/api/v1/alerts/{second}/thumbnail").status_code == 404
