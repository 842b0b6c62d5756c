"""Camera stream states from Redis to MQTT: what `camera_status.CameraStatusPublisher` writes, published
(retained) through every MQTT notifier, so that Home Assistant and other subscribers see each camera's state.

At start, and again after every Redis error, the relay reads the latest state of every camera from the
`gridwatch:camera:{camera}:status` keys and publishes it; then it follows the `gridwatch:camera-status`
stream with XREAD from the last entry it saw. No consumer group: every relay (one per dispatcher process)
sees every change. The stream's last id is taken before the keys are read, so a change that lands in
between is replayed rather than missed (publishing a state twice changes nothing: it is retained).

Every `resync_every_s` the keys are read again and cameras whose state differs from what was published are
published: this catches changes that are only in the keys (the publisher writes the newest state of a
change that failed during a Redis outage to the key alone) and entries trimmed off the stream.

Redis errors never end the thread: it logs the outage once, backs off (doubling up to `retry_max_s`),
reads the keys again when Redis answers, says so, and reads them once more `settle_s` later: publishers
write what changed during the outage to the keys alone, a moment after Redis is back.

The MQTT payload of a camera (see `MqttNotifier.publish_camera_status`): `camera_id`, `state` (the detect
stream's: online, stalled, offline, auth_failed, unsupported, connecting, stopped), `since` (ISO 8601 UTC),
`reason`, the record stream's `record_state` / `record_since` where the camera has one, `ts`, and the
camera's fields from `cameras` (a `name` names the Home Assistant device).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast, runtime_checkable

import redis

from alerts.camera_status import STATUS_KEY, STATUS_STREAM

log = logging.getLogger(__name__)

MAIN_STREAM = "detect"  # the stream whose state is the camera's `state`
_KEY_HEAD, _KEY_TAIL = STATUS_KEY.split("{camera}")


@runtime_checkable
class StatusSink(Protocol):
    """What the relay publishes to: `MqttNotifier` (kept a protocol so that paho loads only where used)."""

    name: str

    def publish_camera_status(
        self, camera_id: str, state: str, extra: Mapping[str, Any] | None = None, wait_s: float | None = None
    ) -> bool: ...


@dataclass(frozen=True, slots=True)
class StreamStatus:
    state: str
    since: float | None
    reason: str | None


class CameraStatusRelay(threading.Thread):
    def __init__(
        self,
        client: redis.Redis,
        sinks: Sequence[StatusSink],
        *,
        cameras: Mapping[str, Mapping[str, Any]] | None = None,
        stream: str = STATUS_STREAM,
        block_ms: int = 1000,
        batch: int = 500,
        resync_every_s: float = 300.0,
        settle_s: float = 5.0,
        retry_min_s: float = 0.5,
        retry_max_s: float = 30.0,
    ) -> None:
        """`sinks`: the MQTT notifiers; `cameras`: extra JSON fields per camera id (name, village, grid).
        XREAD blocks at most `block_ms`, and less than the client's socket timeout if it has one."""
        super().__init__(name="camera-status-relay", daemon=True)
        self.client = client
        self.sinks = tuple(sinks)
        self.cameras = {camera: dict(fields) for camera, fields in (cameras or {}).items()}
        self.stream = stream
        self.block_ms = _block_within_timeout(client, block_ms)
        self.batch = batch
        self.resync_every_s = resync_every_s
        self.settle_s = settle_s
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.stopping = threading.Event()
        self.relayed = 0  # camera states published (each to every sink)
        self.resyncs = 0  # times the keys were read (at start, after errors, periodically)
        self.errors = 0  # Redis errors (or bugs) survived
        self._last_id: str | None = None  # None: read the keys before following the stream again
        self._next_resync = 0.0
        self._states: dict[str, dict[str, StreamStatus]] = {}  # camera -> stream -> status
        self._published: dict[str, tuple[str, dict[str, Any]]] = {}  # camera -> last (state, extra)

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                if self._last_id is None or time.monotonic() >= self._next_resync:
                    self._resync()
                if failures:
                    log.info("camera status relay: reading camera states again after %d error(s)", failures)
                    failures = 0
                    self._next_resync = time.monotonic() + min(self.settle_s, self.resync_every_s)
                self._follow()
            except Exception as exc:  # Redis errors above all; a bug must not end the relay either
                self.errors += 1
                failures += 1
                self._last_id = None
                if failures == 1:
                    if isinstance(exc, redis.RedisError):
                        log.warning("camera status relay: Redis error (%s); retrying until it answers", exc)
                    else:
                        log.exception("camera status relay: unexpected error; retrying")
                self.stopping.wait(min(self.retry_max_s, self.retry_min_s * 2 ** (failures - 1)))

    # -- reading ----------------------------------------------------------------------------------------

    def _resync(self) -> None:
        """The latest state of every camera from the keys; publishes those that differ from the last
        published. Sets the stream position to the entry that was last before the keys were read."""
        last = cast(list[tuple[Any, Any]], self.client.xrevrange(self.stream, count=1))
        last_id = _text(last[0][0]) if last else "0-0"
        keys = [_text(k) for k in self.client.scan_iter(match=STATUS_KEY.format(camera="*"), count=1000)]
        states: dict[str, dict[str, StreamStatus]] = {}
        for start in range(0, len(keys), self.batch):
            chunk = keys[start : start + self.batch]
            pipe = self.client.pipeline(transaction=False)
            for key in chunk:
                pipe.hgetall(key)
            for key, fields in zip(chunk, cast(list[dict[Any, Any]], pipe.execute()), strict=True):
                camera = _camera_of(key)
                streams = _streams_of({_text(k): _text(v) for k, v in fields.items()})
                if camera and streams:
                    states[camera] = streams
        self._states = states
        for camera in sorted(states):
            self._publish(camera, only_if_changed=True)
        self._last_id = last_id
        self._next_resync = time.monotonic() + self.resync_every_s
        self.resyncs += 1

    def _follow(self) -> None:
        """Read and publish the stream's new entries until the next resync is due (or stop)."""
        while not self.stopping.is_set() and time.monotonic() < self._next_resync:
            assert self._last_id is not None
            answer = self.client.xread({self.stream: self._last_id}, count=self.batch, block=self.block_ms)
            for _stream, entries in cast(list[tuple[Any, list[tuple[Any, dict[Any, Any]]]]], answer or []):
                for entry_id, raw in entries:
                    self._apply({_text(k): _text(v) for k, v in raw.items()})
                    self._last_id = _text(entry_id)

    def _apply(self, fields: Mapping[str, str]) -> None:
        camera, state = fields.get("camera_id"), fields.get("state")
        if not camera or not state:
            log.debug("camera status relay: entry without camera_id or state skipped: %s", dict(fields))
            return
        stream = fields.get("stream") or MAIN_STREAM
        status = StreamStatus(state, _float(fields.get("at")), fields.get("reason") or None)
        self._states.setdefault(camera, {})[stream] = status
        self._publish(camera)

    # -- publishing -------------------------------------------------------------------------------------

    def _publish(self, camera: str, only_if_changed: bool = False) -> None:
        state, extra = self._payload(camera)
        if only_if_changed and self._published.get(camera) == (state, extra):
            return
        self._published[camera] = (state, extra)
        for sink in self.sinks:
            try:
                sink.publish_camera_status(camera, state, extra)
            except Exception:  # the sink keeps the state and sends it on reconnect; never stop relaying
                log.exception("camera status relay: %s did not take the state of %s", sink.name, camera)
        self.relayed += 1

    def _payload(self, camera: str) -> tuple[str, dict[str, Any]]:
        streams = self._states[camera]
        main_name = MAIN_STREAM if MAIN_STREAM in streams else sorted(streams)[0]
        main = streams[main_name]
        extra: dict[str, Any] = {**self.cameras.get(camera, {}), "since": _iso(main.since)}
        extra["reason"] = main.reason
        for name in sorted(streams):
            if name != main_name:
                extra[f"{name}_state"] = streams[name].state
                extra[f"{name}_since"] = _iso(streams[name].since)
        return main.state, extra


def _block_within_timeout(client: redis.Redis, block_ms: int) -> int:
    """XREAD's block, kept under the client's socket timeout (or every quiet read would be an error)."""
    timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
    if timeout:
        return max(1, min(block_ms, int(float(timeout) * 1000 * 0.8)))
    return block_ms


def _streams_of(fields: Mapping[str, str]) -> dict[str, StreamStatus]:
    """A status key's hash ({stream}_state, {stream}_since, {stream}_reason) by stream."""
    out: dict[str, StreamStatus] = {}
    for name, value in fields.items():
        if name.endswith("_state") and value:
            stream = name[: -len("_state")]
            since = _float(fields.get(f"{stream}_since"))
            out[stream] = StreamStatus(value, since, fields.get(f"{stream}_reason") or None)
    return out


def _camera_of(key: str) -> str | None:
    if key.startswith(_KEY_HEAD) and key.endswith(_KEY_TAIL) and len(key) > len(_KEY_HEAD) + len(_KEY_TAIL):
        return key[len(_KEY_HEAD) : len(key) - len(_KEY_TAIL)]
    return None


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _iso(at: float | None) -> str | None:
    return datetime.fromtimestamp(at, UTC).isoformat() if at is not None else None


def mqtt_sinks(notifiers: Iterable[object]) -> list[StatusSink]:
    """The notifiers that take camera states (those with `publish_camera_status`: MQTT)."""
    return [n for n in notifiers if isinstance(n, StatusSink)]
