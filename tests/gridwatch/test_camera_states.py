"""The camera wall of an API process that pulls no camera (`gridwatch api`): the states workers publish to
a real Redis, read for all cameras at once, shown by GET /api/v1/cameras; a Redis that is away shows none."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from fastapi.testclient import TestClient

from alerts.camera_status import CameraStatusPublisher
from gridwatch.api import create_app
from gridwatch.api_state import AppState
from gridwatch.camera_states import RedisCameraStates
from gridwatch.services import RedisServer
from ingest.state import StateChange, StreamState
from storage.metadata import CameraRecord, MetadataDB
from storage.objectstore import ObjectStore


def test_the_api_shows_the_states_the_workers_publish(
    db: MetadataDB,
    redis_server: RedisServer,
    api_token: Callable[..., str],
    until: Callable[..., Any],
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    db.upsert_cameras(
        [CameraRecord(c, c, "v1", "g1", f"rtsp://10.0.0.1/{c}", 2.0) for c in ("gate", "mill", "new")]
    )
    publisher = CameraStatusPublisher(client)
    publisher.start()
    now = time.time()
    publisher.publish(StateChange("gate", "detect", StreamState.CONNECTING, StreamState.ONLINE, now))
    publisher.publish(
        StateChange("mill", "detect", StreamState.ONLINE, StreamState.OFFLINE, now, "connection refused")
    )
    publisher.publish(StateChange("mill", "record", StreamState.CONNECTING, StreamState.ONLINE, now))
    until("published", lambda: publisher.published == 3)
    publisher.stop()

    states = RedisCameraStates(client, lambda: [c.id for c in db.list_cameras()], fresh_s=0)
    state = AppState(db, ObjectStore("127.0.0.1:9", "k", "s", "unused"), 30, camera_health=states.health)
    headers = {"Authorization": api_token(db, "otto", "operator")}
    with TestClient(create_app(state)) as api:
        cameras = {c["id"]: c for c in api.get("/api/v1/cameras", headers=headers).json()}
    assert cameras["gate"]["state"] == "online" and cameras["new"]["state"] is None
    assert cameras["mill"]["state"] == "offline"
    assert cameras["mill"]["health"]["detect"]["last_error"] == "connection refused"
    assert cameras["mill"]["health"]["record"]["state"] == "online"
    assert abs(cameras["gate"]["health"]["detect"]["since"] - now) < 1


def test_a_redis_that_is_away_shows_no_state(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", binary="redis-server").start()
    client = redis.Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    client.hset("gridwatch:camera:gate:status", mapping={"detect_state": "online", "detect_since": "1"})
    states = RedisCameraStates(client, lambda: ["gate"], fresh_s=0)
    assert states.health("gate") == {"detect": {"state": "online", "since": 1.0, "last_error": None}}
    server.stop()
    assert states.health("gate") is None
