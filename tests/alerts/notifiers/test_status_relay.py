"""The camera status relay between a real Redis (what `CameraStatusPublisher` writes) and a real Mosquitto
(retained camera states, Home Assistant discovery), through Redis outages."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from alerts.camera_status import STATUS_KEY, CameraStatusPublisher
from alerts.notifiers.mqtt import MqttNotifier
from alerts.notifiers.testing import MosquittoServer, MqttMessage, MqttSubscriber
from alerts.status_relay import CameraStatusRelay, mqtt_sinks
from gridwatch.services import RedisServer
from ingest.state import StateChange, StreamState

Subscribe = Callable[[int, list[str]], MqttSubscriber]
S = StreamState
CAMERAS = {
    "cam-a": {"name": "东村口 East gate", "village": "dongcun", "grid": "dongcun-1"},
    "cam-b": {"name": "West road", "village": "xicun", "grid": "xicun-1"},
}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own (the status stream and keys have fixed names; outage tests stop it)."""
    server = RedisServer(tmp_path / "redis", binary="redis-server").start()
    yield server
    server.stop()


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server.url, socket_timeout=2, socket_connect_timeout=1)
    yield c
    c.close()


@pytest.fixture
def publisher(client: redis.Redis) -> Iterator[CameraStatusPublisher]:
    p = CameraStatusPublisher(client, retry_s=0.1)
    p.start()
    yield p
    p.stop()


@pytest.fixture
def prefix() -> str:
    return f"gw-relay-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def notifier(mosquitto: MosquittoServer, prefix: str) -> Iterator[MqttNotifier]:
    with MqttNotifier("ha", mosquitto.host, mosquitto.port, prefix, discovery_prefix=f"{prefix}-ha") as n:
        assert n.wait_connected(10)
        yield n


@pytest.fixture
def relays() -> Iterator[Callable[..., CameraStatusRelay]]:
    started: list[CameraStatusRelay] = []

    def start(client: redis.Redis, sinks: list[Any], **kw: Any) -> CameraStatusRelay:
        relay = CameraStatusRelay(client, sinks, cameras=CAMERAS, block_ms=200, **kw)
        relay.start()
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.stop()
        assert not relay.is_alive()


def _change(camera: str, old: S, new: S, stream: str = "detect", reason: str | None = None) -> StateChange:
    return StateChange(camera, stream, old, new, time.time(), reason)


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _states(subscriber: MqttSubscriber, count: int, timeout: float = 10.0) -> dict[str, MqttMessage]:
    """The next `count` messages, by camera (later ones win)."""
    out: dict[str, MqttMessage] = {}
    deadline = time.monotonic() + timeout
    for _ in range(count):
        message = subscriber.get(timeout=max(0.01, deadline - time.monotonic()))
        out[message.json()["camera_id"]] = message
    return out


def _no_more(subscriber: MqttSubscriber, wait_s: float = 0.3) -> list[MqttMessage]:
    time.sleep(wait_s)
    return [subscriber.messages.get_nowait() for _ in range(subscriber.messages.qsize())]


def test_current_states_at_start_then_every_change_reach_mqtt_retained(
    client: redis.Redis,
    publisher: CameraStatusPublisher,
    notifier: MqttNotifier,
    mosquitto: MosquittoServer,
    mqtt_subscriber: Subscribe,
    relays: Callable[..., CameraStatusRelay],
    prefix: str,
) -> None:
    # Before the relay runs: cam-a's detect and record streams are online, cam-b is offline.
    publisher.publish(_change("cam-a", S.CONNECTING, S.ONLINE))
    publisher.publish(_change("cam-a", S.CONNECTING, S.ONLINE, stream="record"))
    publisher.publish(_change("cam-b", S.CONNECTING, S.OFFLINE, reason="connection refused"))
    _wait(lambda: publisher.published == 3, 5, "the publisher to write three changes")
    topics = [f"{prefix}/cameras/+/status"]
    live = mqtt_subscriber(mosquitto.port, topics)

    relay = relays(client, mqtt_sinks([notifier]))
    at_start = _states(live, 2)
    assert {c: m.json()["state"] for c, m in at_start.items()} == {"cam-a": "online", "cam-b": "offline"}
    a = at_start["cam-a"].json()
    assert (a["name"], a["grid"], a["record_state"], at_start["cam-a"].qos) == (
        "东村口 East gate",
        "dongcun-1",
        "online",
        1,
    )
    assert at_start["cam-b"].json()["reason"] == "connection refused"
    assert relay.resyncs == 1

    later = _states(mqtt_subscriber(mosquitto.port, topics), 2)  # connects after: gets them retained
    assert all(m.retain for m in later.values())
    assert {c: m.json()["state"] for c, m in later.items()} == {"cam-a": "online", "cam-b": "offline"}

    publisher.publish(_change("cam-a", S.ONLINE, S.STALLED, reason="no packet for 3 s"))
    changed = live.get(topic=f"{prefix}/cameras/cam-a/status")
    assert (changed.json()["state"], changed.json()["reason"]) == ("stalled", "no packet for 3 s")
    assert changed.json()["record_state"] == "online"  # the other stream's state is kept
    assert _no_more(live) == []  # cam-b did not change: nothing about it

    latest = _states(mqtt_subscriber(mosquitto.port, topics), 2)
    assert latest["cam-a"].retain and latest["cam-a"].json()["state"] == "stalled"
    assert latest["cam-b"].json()["state"] == "offline"

    # Home Assistant: one retained connectivity sensor per camera, named after it
    discovery = mqtt_subscriber(mosquitto.port, [f"{prefix}-ha/#"])
    configs = {m.topic: m for m in (discovery.get(), discovery.get())}
    config = configs[notifier.discovery_topic("cam-a")]
    assert config.topic == f"{prefix}-ha/binary_sensor/{prefix}/cam-a_connectivity/config"
    assert config.retain
    assert config.json()["device"]["name"] == "东村口 East gate"
    assert config.json()["state_topic"] == f"{prefix}/cameras/cam-a/status"


def test_every_relay_sees_every_change(
    client: redis.Redis,
    publisher: CameraStatusPublisher,
    mosquitto: MosquittoServer,
    mqtt_subscriber: Subscribe,
    relays: Callable[..., CameraStatusRelay],
    prefix: str,
) -> None:
    notifiers = [MqttNotifier(f"n{i}", mosquitto.host, mosquitto.port, f"{prefix}-{i}") for i in range(2)]
    try:
        for n in notifiers:
            assert n.wait_connected(10)
        subscribers = [mqtt_subscriber(mosquitto.port, [f"{prefix}-{i}/cameras/#"]) for i in range(2)]
        first, second = relays(client, [notifiers[0]]), relays(client, [notifiers[1]])
        _wait(lambda: first.resyncs > 0 and second.resyncs > 0, 5, "both relays to start following")
        for old, new in [(S.CONNECTING, S.ONLINE), (S.ONLINE, S.OFFLINE), (S.OFFLINE, S.AUTH_FAILED)]:
            publisher.publish(_change("cam-b", old, new))
        for subscriber in subscribers:
            assert [subscriber.get().json()["state"] for _ in range(3)] == [
                "online",
                "offline",
                "auth_failed",
            ]
    finally:
        for n in notifiers:
            n.close()


def test_a_redis_outage_is_logged_once_and_survived(
    redis_server: RedisServer,
    client: redis.Redis,
    publisher: CameraStatusPublisher,
    notifier: MqttNotifier,
    mosquitto: MosquittoServer,
    mqtt_subscriber: Subscribe,
    relays: Callable[..., CameraStatusRelay],
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="alerts.status_relay")
    live = mqtt_subscriber(mosquitto.port, [f"{prefix}/cameras/+/status"])
    relay = relays(client, [notifier], retry_min_s=0.05, retry_max_s=0.2, settle_s=1.0)
    _wait(lambda: relay.resyncs > 0, 5, "the relay to start following")
    publisher.publish(_change("cam-a", S.CONNECTING, S.ONLINE))
    assert live.get().json()["state"] == "online"

    redis_server.stop()
    _wait(lambda: relay.errors >= 4, 10, "the relay to retry against the stopped Redis")
    assert relay.is_alive()
    # The camera went offline while Redis was down: the publisher keeps the change and, once Redis is back
    # (empty: no persistence), writes it to the status key only.
    publisher.publish(_change("cam-a", S.ONLINE, S.OFFLINE, reason="camera rebooted"))
    time.sleep(0.3)
    redis_server.start()
    message = live.get(timeout=10)
    assert (message.json()["camera_id"], message.json()["state"]) == ("cam-a", "offline")

    publisher.publish(_change("cam-a", S.OFFLINE, S.ONLINE))  # and the stream is followed again
    assert live.get(timeout=10).json()["state"] == "online"
    assert relay.is_alive()
    relay_logs = [r for r in caplog.records if r.name == "alerts.status_relay"]
    warnings = [r.getMessage() for r in relay_logs if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "Redis error" in warnings[0], warnings  # once, for 4+ failures
    assert any("again after" in r.getMessage() for r in relay_logs if r.levelno == logging.INFO)


def test_a_state_written_only_to_the_status_key_is_found_by_the_periodic_resync(
    client: redis.Redis,
    publisher: CameraStatusPublisher,
    notifier: MqttNotifier,
    mosquitto: MosquittoServer,
    mqtt_subscriber: Subscribe,
    relays: Callable[..., CameraStatusRelay],
    prefix: str,
) -> None:
    live = mqtt_subscriber(mosquitto.port, [f"{prefix}/cameras/+/status"])
    relay = relays(client, [notifier], resync_every_s=0.5)
    _wait(lambda: relay.resyncs > 0, 5, "the relay to start following")
    publisher.publish(_change("cam-b", S.CONNECTING, S.ONLINE))
    assert live.get().json()["state"] == "online"
    # What the publisher writes for a change that failed while Redis was unreachable: the key, no entry.
    client.hset(
        STATUS_KEY.format(camera="cam-b"),
        mapping={"detect_state": "offline", "detect_since": f"{time.time():.3f}", "detect_reason": "timeout"},
    )
    message = live.get(timeout=5)
    assert (message.json()["state"], message.json()["reason"]) == ("offline", "timeout")
    resyncs = relay.resyncs
    _wait(lambda: relay.resyncs >= resyncs + 2, 5, "two more resyncs")
    assert _no_more(live) == []  # nothing changed since: nothing published again
