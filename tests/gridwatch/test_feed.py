"""The live feed (Server-Sent Events) from a real uvicorn server over a real Redis stream."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from alerts.bus import AlertBus, BusMessage
from gridwatch.api import AppState, create_app
from gridwatch.feed import FeedHub, valid_event_id
from gridwatch.services import RedisServer
from storage.metadata import MetadataDB
from storage.objectstore import ObjectStore

AUTH: dict[str, str] = {}  # the served app's operator token


def _message(i: int, grid: str = "g1", kind: str = "alert") -> BusMessage:
    return BusMessage(
        f"{i:032x}",
        kind,
        "cam1",
        "v1",
        grid,
        "fire",
        0.9,
        "2026-12-01T12:00:00+00:00",
        snapshot_key="snap/x.jpg",
    )


@pytest.fixture
def served(tmp_path: Path, api_token: Callable[..., str]) -> Iterator[tuple[str, AlertBus, FeedHub]]:
    redis_server = RedisServer(tmp_path / "redis").start()
    bus = AlertBus.from_url(redis_server.url, "test:alerts")
    feed = FeedHub(bus.client, bus.stream)
    feed.start()
    db = MetadataDB(f"sqlite:///{tmp_path / 'gw.db'}")
    db.create_schema()
    AUTH["Authorization"] = api_token(db, "op", "operator")
    store = ObjectStore("127.0.0.1:9", "k", "secret-key", "unused")
    app = create_app(AppState(db, store, 30, feed=feed))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", bus, feed
    finally:
        server.should_exit = True
        thread.join(10)
        feed.stop()
        bus.close()
        db.close()
        redis_server.stop()


def _read_events(
    url: str, want: int, headers: dict[str, str] | None = None, on_open: Callable[[], None] | None = None
) -> list[dict[str, Any]]:
    """Read `want` events from the feed (fails after 10 s)."""
    events: list[dict[str, Any]] = []
    with httpx.stream("GET", url + "/api/v1/feed", headers={**AUTH, **(headers or {})}, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        if on_open is not None:
            on_open()
        current: dict[str, Any] = {}
        for line in r.iter_lines():
            if line.startswith("id: "):
                current["id"] = line[4:]
            elif line.startswith("event: "):
                current["event"] = line[7:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
            elif line == "" and "data" in current:
                events.append(current)
                current = {}
                if len(events) >= want:
                    break
    return events


def test_a_published_alert_reaches_an_open_feed_within_two_seconds(
    served: tuple[str, AlertBus, FeedHub],
) -> None:
    url, bus, feed = served
    sent: list[float] = []

    def publish_when_subscribed() -> None:
        def later() -> None:
            deadline = time.monotonic() + 5
            while feed.subscribers == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            sent.append(time.monotonic())
            bus.publish(_message(1))

        threading.Thread(target=later, daemon=True).start()

    [event] = _read_events(url, 1, on_open=publish_when_subscribed)
    assert time.monotonic() - sent[0] < 2.0
    assert event["event"] == "alert"
    data = event["data"]
    assert data["alert_id"] == f"{1:032x}" and data["grid"] == "g1" and data["score"] == 0.9
    assert data["snapshot_url"] == f"/api/v1/alerts/{1:032x}/snapshot"
    assert "snapshot_key" not in data  # object keys stay on the server


def test_a_reconnecting_browser_gets_what_it_missed(served: tuple[str, AlertBus, FeedHub]) -> None:
    url, bus, _ = served
    first = bus.publish(_message(1))
    bus.publish(_message(2))
    bus.publish(_message(3, kind="incident"))
    events = _read_events(url, 2, headers={"Last-Event-ID": first})
    assert [e["data"]["alert_id"] for e in events] == [f"{2:032x}", f"{3:032x}"]
    assert [e["event"] for e in events] == ["alert", "incident"]


def test_last_event_ids_are_checked() -> None:
    assert valid_event_id("1733050000000-0") == "1733050000000-0"
    assert valid_event_id("1733050000000") == "1733050000000"
    for bad in (None, "", "abc", "1-x", "9" * 50, "+inf"):
        assert valid_event_id(bad) is None


def test_without_redis_there_is_no_feed(tmp_path: Path, api_token: Callable[..., str]) -> None:
    from fastapi.testclient import TestClient

    db = MetadataDB(f"sqlite:///{tmp_path / 'gw.db'}")
    db.create_schema()
    store = ObjectStore("127.0.0.1:9", "k", "secret-key", "unused")
    headers = {"Authorization": api_token(db, "op", "operator")}
    with TestClient(create_app(AppState(db, store, 30)), headers=headers) as client:
        assert client.get("/api/v1/feed").status_code == 404
    db.close()
