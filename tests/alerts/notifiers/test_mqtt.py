"""The MQTT notifier through a real Mosquitto broker: topics, retained status, last will, reconnects."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from alerts.notifiers.base import Notification, RetryableDeliveryError
from alerts.notifiers.mqtt import MqttNotifier, topic_segment
from alerts.notifiers.testing import REPO, MosquittoServer, MqttSubscriber, free_port

Subscribe = Callable[[int, list[str]], MqttSubscriber]


@pytest.fixture
def prefix() -> str:
    """A topic prefix of the test's own: the session broker keeps retained messages across tests."""
    return f"gw-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def notifier(mosquitto: MosquittoServer, prefix: str) -> Iterator[MqttNotifier]:
    with MqttNotifier("broker", mosquitto.host, mosquitto.port, prefix, publish_timeout_s=5) as notifier:
        assert notifier.wait_connected(10)
        yield notifier


def test_alert_round_trip(
    mosquitto: MosquittoServer,
    notifier: MqttNotifier,
    prefix: str,
    mqtt_subscriber: Subscribe,
    make_notification: Callable[..., Notification],
) -> None:
    subscriber = mqtt_subscriber(mosquitto.port, [f"{prefix}/alerts/G12/#", f"{prefix}/incidents/#"])
    notification = make_notification()
    notifier.send(notification)
    alert = subscriber.get(topic=f"{prefix}/alerts/G12/fire")
    assert alert.json() == notification.as_json()
    assert (alert.retain, alert.qos) == (False, 1)
    incident = subscriber.get(topic=f"{prefix}/incidents/{notification.incident_id}")
    assert incident.json()["dedupe_key"] == notification.dedupe_key


def test_topic_levels_from_data_are_made_safe(
    mosquitto: MosquittoServer,
    notifier: MqttNotifier,
    prefix: str,
    mqtt_subscriber: Subscribe,
    make_notification: Callable[..., Notification],
) -> None:
    assert topic_segment("G/12+#") == "G_12__" and topic_segment("") == "_"
    subscriber = mqtt_subscriber(mosquitto.port, [f"{prefix}/alerts/#"])
    notifier.send(make_notification(grid="G/12+#", label="person"))
    assert subscriber.get().topic == f"{prefix}/alerts/G_12__/person"


def test_retained_camera_status_reaches_a_later_subscriber(
    mosquitto: MosquittoServer, notifier: MqttNotifier, prefix: str, mqtt_subscriber: Subscribe
) -> None:
    assert notifier.publish_camera_status("cam-017", "stalled", {"name": "East gate"}, wait_s=5)
    assert notifier.publish_camera_status("cam-017", "online", {"name": "East gate", "fps": 10}, wait_s=5)
    subscriber = mqtt_subscriber(mosquitto.port, [f"{prefix}/cameras/+/status"])
    message = subscriber.get(topic=f"{prefix}/cameras/cam-017/status")
    assert message.retain
    status = message.json()
    assert (status["camera_id"], status["state"], status["fps"], status["name"]) == (
        "cam-017", "online", 10, "East gate",
    )  # fmt: skip
    online = mqtt_subscriber(mosquitto.port, [f"{prefix}/status"]).get()
    assert (online.payload, online.retain) == (b"online", True)


def test_home_assistant_discovery_config(
    mosquitto: MosquittoServer, prefix: str, mqtt_subscriber: Subscribe
) -> None:
    discovery = f"ha-{prefix}"
    with MqttNotifier("ha", mosquitto.host, mosquitto.port, prefix, discovery_prefix=discovery) as notifier:
        assert notifier.wait_connected(10)
        assert notifier.publish_camera_status("cam.017", "online", {"name": "East gate"}, wait_s=5)
        subscriber = mqtt_subscriber(mosquitto.port, [f"{discovery}/#"])
        message = subscriber.get()
    assert message.topic == f"{discovery}/binary_sensor/{prefix}/cam_017_connectivity/config"
    assert message.retain
    config = message.json()
    assert config["device_class"] == "connectivity"
    assert config["state_topic"] == f"{prefix}/cameras/cam.017/status"
    assert config["availability_topic"] == f"{prefix}/status"
    assert config["device"]["name"] == "East gate"
    assert "value_json.state" in config["value_template"]


def test_clean_close_publishes_offline(
    mosquitto: MosquittoServer, prefix: str, mqtt_subscriber: Subscribe
) -> None:
    notifier = MqttNotifier("bye", mosquitto.host, mosquitto.port, prefix)
    assert notifier.wait_connected(10)
    notifier.close()
    message = mqtt_subscriber(mosquitto.port, [f"{prefix}/status"]).get()
    assert (message.payload, message.retain) == (b"offline", True)


CHILD = """
import sys, time
from alerts.notifiers.mqtt import MqttNotifier
notifier = MqttNotifier("child", "127.0.0.1", int(sys.argv[1]), sys.argv[2], keepalive_s=10)
assert notifier.wait_connected(10), "no connection"
print("ready", flush=True)
time.sleep(300)
"""


def test_last_will_offline_when_the_process_dies(
    mosquitto: MosquittoServer, prefix: str, mqtt_subscriber: Subscribe
) -> None:
    command = [sys.executable, "-c", CHILD, str(mosquitto.port), prefix]
    child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        subscriber = mqtt_subscriber(mosquitto.port, [f"{prefix}/status"])
        online = subscriber.get()
        assert (online.payload, online.retain) == (b"online", True)
        child.kill()
        child.wait(5)
        started = time.monotonic()
        will = subscriber.get(timeout=10)
        assert will.payload == b"offline"
        assert time.monotonic() - started < 5  # the broker sees the socket close; no keepalive wait
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
    late = mqtt_subscriber(mosquitto.port, [f"{prefix}/status"]).get()
    assert (late.payload, late.retain) == (b"offline", True)


def test_not_connected_is_retryable(make_notification: Callable[..., Notification]) -> None:
    with MqttNotifier("nobody", "127.0.0.1", free_port(), connect_wait_s=0.2) as notifier:
        started = time.monotonic()
        with pytest.raises(RetryableDeliveryError, match="not connected"):
            notifier.send(make_notification())
        assert time.monotonic() - started < 4  # waited for the connection 0.2 s, not a keepalive
        assert not notifier.publish_camera_status("cam-1", "online")  # kept for later, not sent


def test_broker_restart_reconnects_and_republishes_status(
    mosquitto_factory: Callable[[], MosquittoServer],
    prefix: str,
    mqtt_subscriber: Subscribe,
    make_notification: Callable[..., Notification],
) -> None:
    server = mosquitto_factory()
    with MqttNotifier(
        "restart", server.host, server.port, prefix, reconnect_min_s=1, reconnect_max_s=1, connect_wait_s=0.2
    ) as notifier:
        assert notifier.wait_connected(10)
        notifier.send(make_notification())
        notifier.publish_camera_status("cam-9", "online", wait_s=5)
        server.stop()
        deadline = time.monotonic() + 5
        while notifier.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(RetryableDeliveryError):
            notifier.send(make_notification())
        notifier.publish_camera_status("cam-9", "offline")  # while the broker is down: kept
        server.start()  # same port, empty: no persistence, so no retained messages
        assert notifier.wait_connected(15)
        notifier.send(make_notification())
        assert retained(server.port, f"{prefix}/cameras/cam-9/status")["state"] == "offline"


def retained(port: int, topic: str, timeout: float = 5.0) -> dict[str, object]:
    """The retained message on `topic`, as a subscriber that connects now gets it (polls until one does)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with MqttSubscriber(port, [topic]) as subscriber:
            try:
                message = subscriber.get(timeout=0.5)
            except AssertionError:
                continue
            if message.retain:
                result: dict[str, object] = message.json()
                return result
    raise AssertionError(f"no retained message on {topic} within {timeout}s")
