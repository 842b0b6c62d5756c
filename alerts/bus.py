"""The alert bus: alerts as entries of a Redis stream (`gridwatch:alerts`).

Producers `publish` (XADD, approximate MAXLEN trimming); in the workers they do it through
`alerts.outbox.OutboxPublisher`, which keeps messages on local disk while Redis is unreachable. Consumers
(the dispatcher) read through a consumer group with `StreamConsumer`: delivery is at-least-once (an entry
is pending until acked; a consumer that died is reclaimed by another with `reclaim_idle`; the outbox may
send an entry twice), so a consumer makes its side effects idempotent with `Deduper` and `dedupe_key()`.
Entries that cannot be parsed go to the dead-letter stream `gridwatch:alerts:dead` and are acked.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import redis

STREAM = "gridwatch:alerts"
DEAD_STREAM = "gridwatch:alerts:dead"  # entries no consumer could parse
KINDS = frozenset({"alert", "clip", "ended", "incident"})

log = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class BusMessage:
    """What goes on the stream: flat string fields so any Redis client can read it."""

    alert_id: str
    kind: str  # "alert" (new), "clip" (its clip is stored) or "ended" (the object left or stopped being seen)
    camera_id: str
    village: str
    grid: str
    label: str
    score: float
    created_at: str  # ISO 8601 UTC
    snapshot_key: str | None = None
    clip_key: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    frame_time: str | None = None  # ISO 8601 UTC: when the frame that raised the alert was received
    ended_at: str | None = None  # kind "ended": when the object was last seen
    duration_s: float | None = None  # kind "ended": first to last sighting of the object
    best_score: float | None = None  # kind "ended": the best score over the object's whole event
    sequence: int | None = None  # kind "clip": 0 for the alert's first clip, 1, 2... for continuations
    severity: str | None = None  # kind "alert": low, normal, high or critical (the rule's)
    rule: str | None = None  # kind "alert": the rule that raised it
    incident_id: str | None = None  # kind "incident": the incident whose status changed
    status: str | None = None  # kind "incident": its new status

    def fields(self) -> dict[str, str]:
        out: dict[str, str] = {
            "alert_id": self.alert_id,
            "kind": self.kind,
            "camera_id": self.camera_id,
            "village": self.village,
            "grid": self.grid,
            "label": self.label,
            "score": f"{self.score:.4f}",
            "created_at": self.created_at,
        }
        if self.snapshot_key:
            out["snapshot_key"] = self.snapshot_key
        if self.clip_key:
            out["clip_key"] = self.clip_key
        if self.bbox is not None:
            out["bbox"] = json.dumps([round(v, 2) for v in self.bbox])
        for name in ("frame_time", "ended_at"):
            value = getattr(self, name)
            if value:
                out[name] = value
        if self.duration_s is not None:
            out["duration_s"] = f"{self.duration_s:.2f}"
        if self.best_score is not None:
            out["best_score"] = f"{self.best_score:.4f}"
        if self.sequence is not None:
            out["sequence"] = str(self.sequence)
        for name in ("severity", "rule", "incident_id", "status"):
            value = getattr(self, name)
            if value:
                out[name] = value
        return out

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> BusMessage:
        f = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in fields.items()
        }
        bbox = tuple(json.loads(f["bbox"])) if "bbox" in f else None
        return cls(
            alert_id=f["alert_id"],
            kind=f["kind"],
            camera_id=f["camera_id"],
            village=f["village"],
            grid=f["grid"],
            label=f["label"],
            score=float(f["score"]),
            created_at=f["created_at"],
            snapshot_key=f.get("snapshot_key"),
            clip_key=f.get("clip_key"),
            bbox=bbox,  # type: ignore[arg-type]
            frame_time=f.get("frame_time"),
            ended_at=f.get("ended_at"),
            duration_s=float(f["duration_s"]) if "duration_s" in f else None,
            best_score=float(f["best_score"]) if "best_score" in f else None,
            sequence=int(f["sequence"]) if "sequence" in f else None,
            severity=f.get("severity"),
            rule=f.get("rule"),
            incident_id=f.get("incident_id"),
            status=f.get("status"),
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# An alert ("alert" kind) is added to the stream once: a marker `{stream}:published:{alert_id}` is set (NX,
# PUBLISHED_TTL_S) with the entry, in one script. A second publication of the same alert (an outbox drained
# again after a crash, the worker that took a camera over republishing what its dead owner left unpublished)
# adds nothing. The marker outlives the window in which alerts are republished (`REPUBLISH_WINDOW_S`).
PUBLISHED_TTL_S = 2 * 86400
REPUBLISH_WINDOW_S = 3600

# KEYS: stream, marker. ARGV: maxlen, ttl s, then field, value, ... The entry id, or false: published before.
_PUBLISH_ONCE = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then return false end
local args = {'XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*'}
for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
return redis.call(unpack(args))
"""


def published_marker(stream: str, alert_id: str) -> str:
    return f"{stream}:published:{alert_id}"


class AlertBus:
    def __init__(self, client: redis.Redis, stream: str = STREAM, maxlen: int = 100_000) -> None:
        self.client = client
        self.stream = stream
        self.maxlen = maxlen
        self._publish_once = client.register_script(_PUBLISH_ONCE)

    @classmethod
    def from_url(cls, url: str, stream: str = STREAM, maxlen: int = 100_000) -> AlertBus:
        from alerts.redis_connect import connect  # redis:// or redis+sentinel://

        client = connect(url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)
        return cls(client, stream, maxlen)

    def publish(self, message: BusMessage) -> str:
        """Add the message; its entry id ("" for an alert published before: nothing was added)."""
        entry_id = self.add(self.client, message.fields())
        return "" if entry_id is None else _text(entry_id)

    def add(self, client: redis.Redis | redis.client.Pipeline, fields: dict[str, str]) -> Any:
        """XADD `fields` with `client` (or queue it on a pipeline); an alert only once (see
        `PUBLISHED_TTL_S`). With a client: the entry id, None when the alert was published before."""
        if fields.get("kind") != "alert":
            return client.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        args: list[str | int] = [self.maxlen, PUBLISHED_TTL_S]
        for name, value in fields.items():
            args += [name, value]
        marker = published_marker(self.stream, fields["alert_id"])
        return self._publish_once(keys=[self.stream, marker], args=args, client=client)

    def published(self, alert_ids: list[str]) -> set[str]:
        """Which of the alerts have been added to the stream (their markers exist)."""
        if not alert_ids:
            return set()
        pipe = self.client.pipeline(transaction=False)
        for alert_id in alert_ids:
            pipe.exists(published_marker(self.stream, alert_id))
        return {a for a, found in zip(alert_ids, pipe.execute(), strict=True) if found}

    def read_all(self, count: int = 1000) -> list[tuple[str, BusMessage]]:
        entries = cast(list[tuple[Any, dict[Any, Any]]], self.client.xrange(self.stream, count=count))
        return [(_text(eid), BusMessage.from_fields(fields)) for eid, fields in entries]

    def ensure_group(self, group: str, start: str = "0") -> bool:
        """Create consumer group `group` (and the stream, MKSTREAM) reading from `start` ("0": every entry
        still in the stream, "$": only new ones). True if it was created, False if it existed (BUSYGROUP)."""
        try:
            self.client.xgroup_create(self.stream, group, id=start, mkstream=True)
        except redis.ResponseError as exc:
            if str(exc).startswith("BUSYGROUP"):
                return False
            raise
        return True

    def close(self) -> None:
        self.client.close()


# -- consuming: consumer groups, reclaiming, dead letters, idempotence ------------------------------


def default_consumer_name() -> str:
    """One consumer name per process: `hostname-pid` (a restarted process is a new consumer; what the old
    one left pending is taken over with `reclaim_idle`)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def dedupe_key(message: BusMessage) -> str:
    """What identifies one delivery of a bus message: the same alert, kind and clip sequence is the same
    message, even when it reached the stream twice (an outbox drain after a crash) or was reclaimed."""
    sequence = "" if message.sequence is None else str(message.sequence)
    return f"{message.alert_id}:{message.kind}:{sequence}"


def _unavailable(exc: redis.RedisError) -> bool:
    """Redis cannot serve now but will (down, loading, a replica, failing over): retry later, quietly."""
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return True
    return str(exc).startswith(("LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "BUSY "))


@dataclass(frozen=True, slots=True)
class PendingSummary:
    """XPENDING of a group: entries delivered and not acked, the id range, and how many per consumer."""

    count: int
    smallest: str | None
    greatest: str | None
    consumers: Mapping[str, int] = field(default_factory=dict)


class StreamConsumer:
    """One consumer of a consumer group on the alert stream.

    Nothing here raises for Redis being unreachable: `read`, `reclaim_idle`, `ack` and `pending` log the first
    failure of a streak, back off (exponentially, up to `retry_max_s`; `stopping.set()` cuts the wait short)
    and return an empty result, so a consuming loop goes on by itself once Redis answers. When the group is
    gone (NOGROUP: Redis restarted without AOF, or someone deleted it) it is re-created from `start` with a
    warning; with start "0" that re-delivers what is still in the stream, which consumers dedupe anyway.
    Entries that cannot be parsed are logged with their id, copied to `dead_stream` and acked, atomically.

    `block_ms` is capped below the client's socket timeout (a longer block would read as a timeout).
    """

    def __init__(
        self,
        bus: AlertBus,
        group: str,
        consumer: str | None = None,
        *,
        start: str = "0",
        dead_stream: str = DEAD_STREAM,
        dead_maxlen: int = 10_000,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 5.0,
    ) -> None:
        self.bus = bus
        self.client = bus.client
        self.stream = bus.stream
        self.group = group
        self.consumer = consumer or default_consumer_name()
        self.start = start
        self.dead_stream = dead_stream
        self.dead_maxlen = dead_maxlen
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.stopping = threading.Event()
        # counters (metrics)
        self.dead_lettered = 0
        self.deleted_acked = 0  # pending entries that MAXLEN trimming removed before anyone processed them
        self.groups_recreated = 0
        self.failures = 0  # consecutive failed calls (0 while Redis answers)
        timeout = self.client.connection_pool.connection_kwargs.get("socket_timeout")
        self._max_block_ms = max(1, int(timeout * 1000) - 500) if timeout else None

    def ensure_group(self) -> bool:
        return self.bus.ensure_group(self.group, self.start)

    def read(self, count: int = 100, block_ms: int = 1000) -> list[tuple[str, BusMessage]]:
        """New entries for this consumer (XREADGROUP `>`), waiting up to `block_ms` for the first one
        (0: not at all)."""
        if self._max_block_ms is not None:
            block_ms = min(block_ms, self._max_block_ms)
        block = block_ms if block_ms > 0 else None  # BLOCK 0 would wait forever
        response = self._call(
            "read",
            lambda: self.client.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=count, block=block
            ),
        )
        if not response:
            return []
        [(_stream, entries)] = cast(list[tuple[Any, list[tuple[Any, Any]]]], response)
        return self._parse(entries)

    def ack(self, *ids: str) -> int:
        """Ack entries; the number acked (0 if Redis is unreachable: they stay pending and are reclaimed)."""
        if not ids:
            return 0
        done = self._call("ack", lambda: self.client.xack(self.stream, self.group, *ids))
        return int(cast(int, done or 0))

    def reclaim_idle(self, min_idle_ms: int, count: int = 100) -> list[tuple[str, BusMessage]]:
        """Take over up to `count` entries pending for at least `min_idle_ms` in any consumer of the group
        (one that died before acking), XAUTOCLAIM over the whole pending list. Entries that MAXLEN trimming
        deleted come back as ids only: they are acked and logged (nothing is left to deliver)."""
        claimed: list[tuple[str, BusMessage]] = []
        cursor, seen = "0-0", 0
        while seen < count:
            response = self._call(
                "reclaim",
                lambda c=cursor, n=count - seen: self.client.xautoclaim(  # type: ignore[misc]
                    self.stream, self.group, self.consumer, min_idle_ms, start_id=c, count=n
                ),
            )
            if not response:
                break
            cursor = _text(response[0])
            entries = [(eid, f) for eid, f in response[1] if eid is not None]
            deleted = [_text(eid) for eid in (response[2] if len(response) > 2 else [])]
            seen += len(entries) + len(deleted)
            if deleted:
                self._ack_deleted(deleted)
            claimed.extend(self._parse(entries))
            if cursor in ("0-0", "0"):
                break
        return claimed

    def pending(self) -> PendingSummary:
        """XPENDING summary of the group (an empty summary if Redis is unreachable)."""
        info = cast(
            dict[str, Any] | None,
            self._call("pending", lambda: self.client.xpending(self.stream, self.group)),
        )
        if not info or not info.get("pending"):
            return PendingSummary(0, None, None, {})
        consumers = {_text(c["name"]): int(c["pending"]) for c in info.get("consumers") or []}
        return PendingSummary(int(info["pending"]), _text(info["min"]), _text(info["max"]), consumers)

    # -- internals ------------------------------------------------------------------------------
    def _call(self, what: str, call: Callable[[], _T]) -> _T | None:
        """Run one Redis call: NOGROUP re-creates the group and retries once; other errors are logged once
        per streak, backed off, and give None."""
        for attempt in range(2):
            try:
                result = call()
            except redis.ResponseError as exc:
                if str(exc).startswith("NOGROUP") and attempt == 0 and self._recreate_group(exc):
                    continue
                self._failed(what, exc)
                return None
            except redis.RedisError as exc:
                self._failed(what, exc)
                return None
            if self.failures:
                log.info("%s: Redis answers again (after %d failed calls)", self.consumer, self.failures)
                self.failures = 0
            return result
        return None

    def _recreate_group(self, exc: redis.RedisError) -> bool:
        log.warning(
            "consumer group %s of %s is gone (%s): Redis restarted without its data? Re-creating it from %s",
            self.group,
            self.stream,
            exc,
            self.start,
        )
        try:
            self.bus.ensure_group(self.group, self.start)
        except redis.RedisError as again:
            self._failed("re-create the group", again)
            return False
        self.groups_recreated += 1
        return True

    def _failed(self, what: str, exc: redis.RedisError) -> None:
        self.failures += 1
        if self.failures == 1:
            if _unavailable(exc):
                log.warning("%s %s: Redis unreachable (%s); retrying with backoff", self.consumer, what, exc)
            else:
                log.error("%s %s failed: %s; retrying with backoff", self.consumer, what, exc)
        delay = min(self.retry_max_s, self.retry_initial_s * 2 ** min(self.failures - 1, 20))
        self.stopping.wait(delay)

    def _parse(self, entries: Iterable[tuple[Any, Any]]) -> list[tuple[str, BusMessage]]:
        out: list[tuple[str, BusMessage]] = []
        for raw_id, fields in entries:
            entry_id = _text(raw_id)
            try:
                message = BusMessage.from_fields(fields or {})
                _check(message)
            except (KeyError, ValueError, TypeError) as exc:  # UnicodeDecodeError, JSONDecodeError included
                self._dead_letter(entry_id, fields or {}, exc)
                continue
            out.append((entry_id, message))
        return out

    def _dead_letter(self, entry_id: str, fields: Mapping[Any, Any], error: Exception) -> None:
        reason = f"{type(error).__name__}: {error}"[:500]
        log.error(
            "entry %s of %s cannot be read (%s): moved to %s and acked",
            entry_id,
            self.stream,
            reason,
            self.dead_stream,
        )
        dead: dict[Any, Any] = {
            "source_stream": self.stream,
            "source_id": entry_id,
            "error": reason,
            "group": self.group,
            "consumer": self.consumer,
            "dead_at": datetime.now(UTC).isoformat(),
        }
        for key, value in fields.items():
            dead[(b"field:" + key) if isinstance(key, bytes) else f"field:{key}"] = value

        def move() -> list[Any]:  # MULTI: copied and acked, or neither
            pipe = self.client.pipeline(transaction=True)
            pipe.xadd(self.dead_stream, dead, maxlen=self.dead_maxlen, approximate=True)
            pipe.xack(self.stream, self.group, entry_id)
            return pipe.execute()

        # On failure it stays pending: reclaimed later, and dead-lettered then.
        if self._call("dead-letter", move) is not None:
            self.dead_lettered += 1

    def _ack_deleted(self, ids: list[str]) -> None:
        log.warning(
            "%d pending entr%s of %s trimmed (MAXLEN) before they were processed, acked: %s",
            len(ids),
            "y" if len(ids) == 1 else "ies",
            self.stream,
            " ".join(ids[:10]) + (" ..." if len(ids) > 10 else ""),
        )
        self.ack(*ids)
        self.deleted_acked += len(ids)


def _check(message: BusMessage) -> None:
    """What `from_fields` lets through but no consumer can use."""
    if not message.alert_id or not message.camera_id:
        raise ValueError("empty alert_id or camera_id")
    if message.kind not in KINDS:
        raise ValueError(f"unknown kind {message.kind!r}")
    if message.bbox is not None and (
        len(message.bbox) != 4 or not all(isinstance(v, int | float) for v in message.bbox)
    ):
        raise ValueError(f"bbox is not 4 numbers: {message.bbox!r}")


class Deduper:
    """Once-only side effects across consumers and redeliveries: `claim(key)` is True for the first caller
    only (SET NX EX), for `ttl_s`; `release(key)` after a failed side effect lets a later try claim it again.

    Redis errors propagate: a caller that cannot claim must not send, and leaves the entry unacked.
    """

    def __init__(
        self, client: redis.Redis, prefix: str = "gridwatch:dedupe:", ttl_s: int = 7 * 86400
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s

    def claim(self, key: str) -> bool:
        return bool(self.client.set(self.prefix + key, default_consumer_name(), nx=True, ex=self.ttl_s))

    def release(self, key: str) -> None:
        self.client.delete(self.prefix + key)
