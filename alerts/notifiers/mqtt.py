"""MQTT (paho-mqtt 2.x): alerts, incidents and camera status as JSON under one topic prefix.

Topics (prefix default "gridwatch"):
- `{prefix}/alerts/{grid}/{label}`: every notification (QoS 1, not retained), so a subscriber can take one
  grid (`gridwatch/alerts/G12/#`) or one label everywhere (`gridwatch/alerts/+/fire`);
- `{prefix}/incidents/{incident_id}`: the same notifications per incident (QoS 1, not retained);
- `{prefix}/cameras/{camera_id}/status`: the latest stream state of each camera (retained);
- `{prefix}/status`: "online" (retained) while this client is connected, "offline" (retained) after a clean
  close, and the broker publishes the same "offline" as this client's last will when the process dies;
- with `discovery_prefix` set (Home Assistant uses "homeassistant"): a retained config per camera at
  `{discovery_prefix}/binary_sensor/{node}/{camera}_connectivity/config` describing a connectivity sensor
  that reads the camera status topic.
Topic segments taken from data have `/`, `+`, `#` and NUL replaced by `_`.

paho's network thread connects and reconnects (with backoff) by itself; on every (re)connect the availability,
discovery configs and the latest camera states are published again, since a broker without persistence forgets
retained messages when it restarts. `send()` waits for the broker's PUBACKs and raises
`RetryableDeliveryError` when not connected or not acknowledged in time (QoS 1 is at-least-once: receivers
dedupe on `dedupe_key` in the payload).

Several processes with the same prefix share `{prefix}/status`: give each its own `availability_topic` where
that matters.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import ssl
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from alerts.notifiers.base import Notification, Notifier, RetryableDeliveryError

log = logging.getLogger(__name__)

ONLINE = "online"
OFFLINE = "offline"
_UNSAFE_SEGMENT = re.compile(r"[/+#\x00]")
_UNSAFE_ID = re.compile(r"[^a-zA-Z0-9_-]")


def topic_segment(text: str) -> str:
    """`text` usable as one topic level."""
    return _UNSAFE_SEGMENT.sub("_", text) or "_"


def _compact(payload: Mapping[str, object]) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


class MqttNotifier(Notifier):
    channel = "mqtt"

    def __init__(
        self,
        name: str,
        host: str = "127.0.0.1",
        port: int = 1883,
        prefix: str = "gridwatch",
        *,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        ca_file: str | None = None,
        keepalive_s: int = 30,
        qos: int = 1,
        publish_timeout_s: float = 10.0,
        connect_wait_s: float = 1.0,
        discovery_prefix: str | None = None,
        availability_topic: str | None = None,
        reconnect_min_s: int = 1,
        reconnect_max_s: int = 30,
    ) -> None:
        """Starts connecting at once (in paho's thread); `connect_wait_s` is how long `send()` waits for a
        connection that is not there yet before it raises a retryable error."""
        super().__init__(name, secrets=[password])
        self.prefix = prefix.rstrip("/")
        self.discovery_prefix = discovery_prefix.rstrip("/") if discovery_prefix else None
        self.availability_topic = availability_topic or f"{self.prefix}/status"
        self._qos = qos
        self._publish_timeout_s = publish_timeout_s
        self._connect_wait_s = connect_wait_s
        self._what = f"mqtt {name!r} ({host}:{port})"
        self._connected = threading.Event()
        self._closing = False
        self._lock = threading.Lock()
        self._statuses: dict[str, tuple[str, str | None]] = {}  # camera -> (payload, display name)
        self._configured: set[str] = set()  # cameras whose discovery config went out on this connection

        client_id = client_id or f"gridwatch-{name}-{os.getpid()}-{secrets.token_hex(3)}"
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls:
            self._client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
        self._client.will_set(self.availability_topic, OFFLINE, qos=1, retain=True)
        self._client.reconnect_delay_set(reconnect_min_s, reconnect_max_s)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.connect_async(host, port, keepalive=keepalive_s)
        self._client.loop_start()

    # topics
    def alert_topic(self, notification: Notification) -> str:
        grid, label = topic_segment(notification.grid), topic_segment(notification.label)
        return f"{self.prefix}/alerts/{grid}/{label}"

    def incident_topic(self, notification: Notification) -> str:
        return f"{self.prefix}/incidents/{topic_segment(notification.incident_id)}"

    def camera_status_topic(self, camera_id: str) -> str:
        return f"{self.prefix}/cameras/{topic_segment(camera_id)}/status"

    def discovery_topic(self, camera_id: str) -> str:
        node, camera = _UNSAFE_ID.sub("_", self.prefix), _UNSAFE_ID.sub("_", camera_id)
        return f"{self.discovery_prefix}/binary_sensor/{node}/{camera}_connectivity/config"

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout) and self._client.is_connected()

    # publishing
    def send(self, notification: Notification, target: str | None = None) -> None:
        if not self.wait_connected(self._connect_wait_s):
            raise RetryableDeliveryError(f"{self._what}: not connected")
        payload = _compact(notification.as_json())
        topics = (self.alert_topic(notification), self.incident_topic(notification))
        infos = [self._client.publish(topic, payload, qos=self._qos, retain=False) for topic in topics]
        deadline = time.monotonic() + self._publish_timeout_s
        for info in infos:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
                published = info.is_published()
            except (RuntimeError, ValueError) as exc:
                raise RetryableDeliveryError(f"{self._what}: publish failed ({exc})") from None
            if not published:
                raise RetryableDeliveryError(f"{self._what}: no PUBACK within {self._publish_timeout_s:g}s")

    def publish_camera_status(
        self, camera_id: str, state: str, extra: Mapping[str, Any] | None = None, wait_s: float | None = None
    ) -> bool:
        """Publish a camera's state (retained). Kept and re-published after every reconnect; while
        disconnected it is only kept. `extra` adds fields to the JSON (a "name" also names the Home Assistant
        device). With `wait_s`, waits that long for the broker's acknowledgement. True if it went out now."""
        fields = dict(extra or {})
        payload = _compact(
            {**fields, "camera_id": camera_id, "state": state, "ts": datetime.now(UTC).isoformat()}
        )
        name = str(fields["name"]) if fields.get("name") else None
        with self._lock:
            self._statuses[camera_id] = (payload, name)
            if not self._client.is_connected():
                return False
            info = self._publish_status(camera_id, payload, name)
        if wait_s is not None:
            try:
                info.wait_for_publish(wait_s)
                return info.is_published()
            except (RuntimeError, ValueError):
                return False
        return True

    def _publish_status(self, camera_id: str, payload: str, name: str | None) -> mqtt.MQTTMessageInfo:
        """Under self._lock: the discovery config the first time on this connection, then the status."""
        if self.discovery_prefix and camera_id not in self._configured:
            config = self._discovery_config(camera_id, name)
            self._client.publish(self.discovery_topic(camera_id), _compact(config), qos=1, retain=True)
            self._configured.add(camera_id)
        return self._client.publish(self.camera_status_topic(camera_id), payload, qos=1, retain=True)

    def _discovery_config(self, camera_id: str, name: str | None) -> dict[str, object]:
        node = _UNSAFE_ID.sub("_", self.prefix)
        object_id = f"{node}_{_UNSAFE_ID.sub('_', camera_id)}"
        status_topic = self.camera_status_topic(camera_id)
        return {
            "name": "Stream",
            "unique_id": f"{object_id}_connectivity",
            "device_class": "connectivity",
            "state_topic": status_topic,
            "value_template": "{{ 'ON' if value_json.state == 'online' else 'OFF' }}",
            "json_attributes_topic": status_topic,
            "availability_topic": self.availability_topic,
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
            "device": {"identifiers": [object_id], "name": name or camera_id, "manufacturer": "GridWatch"},
            "origin": {"name": "GridWatch"},
        }

    # paho callbacks (network thread)
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            log.warning("%s: connection refused: %s", self._what, reason)
            return
        client.publish(self.availability_topic, ONLINE, qos=1, retain=True)
        with self._lock:
            self._configured.clear()
            for camera_id, (payload, name) in self._statuses.items():
                self._publish_status(camera_id, payload, name)
        self._connected.set()
        log.info("%s: connected", self._what)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._connected.clear()
        if not self._closing:
            log.warning("%s: disconnected (%s); reconnecting", self._what, reason)

    def close(self, timeout: float = 2.0) -> None:
        """Publish "offline" (retained), disconnect cleanly (the broker drops the will), stop the thread."""
        self._closing = True
        if self._client.is_connected():
            info = self._client.publish(self.availability_topic, OFFLINE, qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout)
        self._client.disconnect()
        self._client.loop_stop()
