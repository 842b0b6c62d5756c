"""Fixtures for the notifier tests (and the dispatcher tests that reuse them), over the real servers of
`alerts.notifiers.testing`: `http_receiver`, `mosquitto` (session), `mosquitto_factory`, `mqtt_subscriber`,
`webpush_server` (session), `make_notification`, `free_port`.

Nothing skips: a missing mosquitto, node or web-push-testing is a failure (scripts/setup.sh installs them).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from alerts.notifiers import testing
from alerts.notifiers.base import Notification
from alerts.notifiers.testing import HttpReceiver, MosquittoServer, MqttSubscriber, WebPushTestingServer


def _require(make: Callable[[], Any]) -> Any:
    try:
        return make()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A port on 127.0.0.1 that nothing listened on a moment ago."""
    return testing.free_port


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoServer]:
    """One broker for the session: tests use their own topic prefixes (retained messages outlive tests)."""
    with _require(lambda: MosquittoServer(tmp_path_factory.mktemp("mosquitto"))) as server:
        yield server


@pytest.fixture
def mosquitto_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], MosquittoServer]]:
    """Start brokers of the test's own (to stop and restart them); all are stopped afterwards."""
    servers: list[MosquittoServer] = []

    def start() -> MosquittoServer:
        server: MosquittoServer = _require(lambda: MosquittoServer(tmp_path_factory.mktemp("mosquitto")))
        servers.append(server.__enter__())
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def mqtt_subscriber() -> Iterator[Callable[[int, list[str]], MqttSubscriber]]:
    """`mqtt_subscriber(port, topics)` connects a subscriber; all are disconnected afterwards."""
    subscribers: list[MqttSubscriber] = []

    def connect(port: int, topics: list[str]) -> MqttSubscriber:
        subscriber = MqttSubscriber(port, topics).__enter__()
        subscribers.append(subscriber)
        return subscriber

    yield connect
    for subscriber in subscribers:
        subscriber.__exit__(None, None, None)


@pytest.fixture(scope="session")
def webpush_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebPushTestingServer]:
    with _require(lambda: WebPushTestingServer(tmp_path_factory.mktemp("web-push-testing"))) as server:
        yield server


_sequence = itertools.count(1)


@pytest.fixture
def make_notification() -> Callable[..., Notification]:
    """`make_notification(**overrides)`: a realistic notification with a fresh incident and dedupe key."""

    def make(**overrides: Any) -> Notification:
        n = next(_sequence)
        fields: dict[str, Any] = {
            "dedupe_key": f"inc-{n:04d}:new",
            "kind": "new",
            "incident_id": f"inc-{n:04d}",
            "alert_id": f"{n:032x}",
            "severity": "critical",
            "label": "fire",
            "score": 0.87,
            "camera_id": "cam-017",
            "camera_name": "东村口 East gate",
            "village": "东村",
            "grid": "G12",
            "team": "patrol-3",
            "title": "Fire at East gate",
            "body": "Flames seen for 12 s at the village entrance.",
            "created_at": "2025-05-01T08:30:00Z",
            "snapshot_url": "https://gw.example/snapshots/x.jpg",
            "url": "https://gw.example/alerts/x",
        }
        fields.update(overrides)
        return Notification(**fields)

    return make
