"""The local outbox in front of the alert bus, against real Redis servers killed, frozen and restarted."""

from __future__ import annotations

import logging
import os
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from alerts.bus import AlertBus, BusMessage, Deduper, StreamConsumer, dedupe_key
from alerts.outbox import OutboxPublisher
from gridwatch.services import RedisServer, find_redis_binary

REPO = Path(__file__).resolve().parents[2]


def message(i: int) -> BusMessage:
    return BusMessage(f"{i:032x}", "alert", "cam-1", "v1", "g1", "person", 0.9, "2026-01-01T00:00:00+00:00")


def on_stream(server: RedisServer, stream: str) -> list[BusMessage]:
    client = redis.Redis.from_url(server.url, socket_timeout=5)
    try:
        return [m for _, m in AlertBus(client, stream).read_all(count=1_000_000)]
    finally:
        client.close()


def outbox_rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return cast(int, db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


def fast(bus: AlertBus, path: Path, **kwargs: Any) -> OutboxPublisher:
    """An outbox that retries quickly (tests do not wait seconds for a backoff)."""
    options: dict[str, Any] = {"retry_initial_s": 0.02, "retry_max_s": 0.2, "timeout_s": 1.0, **kwargs}
    return OutboxPublisher(bus, path, **options)


@pytest.mark.parametrize(
    ("binary", "fsync"),
    [
        pytest.param(find_redis_binary(), "always", id="valkey-always"),
        pytest.param("redis-server", "always", id="redis-always"),
        pytest.param(find_redis_binary(), "everysec", id="valkey-everysec"),  # what `gridwatch run` uses
    ],
)
def test_redis_killed_in_the_middle_of_a_burst(
    tmp_path: Path, binary: str, fsync: Any, until: Callable[..., Any]
) -> None:
    """kill -9 of Redis (AOF) while a thread publishes 200 alerts, restart on the same port and data: every
    alert reaches the stream (a drain race may add a duplicate, which the dedupe key removes), in order of
    first appearance; the consumer group and its pending list survive."""
    server = RedisServer(tmp_path / "redis", binary=binary, appendonly=True, fsync=fsync).start()
    stream = f"test:alerts:{uuid.uuid4().hex[:8]}"
    try:
        bus = AlertBus.from_url(server.url, stream=stream)
        consumer = StreamConsumer(bus, "dispatch", consumer="c1", retry_initial_s=0.02, retry_max_s=0.2)
        consumer.ensure_group()
        outbox = fast(bus, tmp_path / "outbox.db")
        before = [message(i) for i in range(10)]
        for m in before:
            outbox.publish(m)
        assert len(consumer.read(count=10, block_ms=100)) == 10  # pending: not acked
        assert outbox.published == 10

        burst = [message(i) for i in range(10, 210)]
        took: list[float] = []

        def produce() -> None:
            for m in burst:
                started = time.perf_counter()
                outbox.publish(m)
                took.append(time.perf_counter() - started)
                time.sleep(0.003)

        thread = threading.Thread(target=produce)
        thread.start()
        until("60 alerts on the stream", lambda: cast(int, bus.client.xlen(stream)) >= 60, every=0.002)
        server.kill()
        until("alerts queued while Redis is down", lambda: outbox.depth >= 20 or not thread.is_alive())
        server.start()
        thread.join(20)
        assert not thread.is_alive()
        until("the outbox is drained", lambda: outbox.depth == 0)
        outbox.close()

        assert outbox.queued >= 20, "the kill did not fall in the burst"
        assert max(took) < 1.5  # never held the detection loop for long
        published = [*before, *burst]
        keys = [dedupe_key(m) for m in on_stream(server, stream)]
        counts = Counter(keys)
        missing = {dedupe_key(m) for m in published} - set(counts)
        assert not missing
        duplicates = sum(n - 1 for n in counts.values())
        print(f"{binary} {fsync}: queued {outbox.queued}, drained {outbox.drained}, duplicates {duplicates}")
        assert duplicates <= 2  # at most the message in flight at the kill (and the batch in flight)
        first_seen = list(dict.fromkeys(keys))
        assert first_seen == [dedupe_key(m) for m in published]  # per-producer order kept

        # The group and its pending list survived the kill; reading goes on where it was.
        pending = until("the pending list after the restart", lambda: consumer.pending().count)
        assert pending == 10 and dict(consumer.pending().consumers) == {"c1": 10}
        dedupe = Deduper(bus.client, prefix=f"test:dedupe:{uuid.uuid4().hex[:8]}:")
        delivered: list[str] = []
        skipped = 0
        deadline = time.monotonic() + 10
        while len(delivered) < len(burst) and time.monotonic() < deadline:
            for entry_id, m in consumer.read(count=500, block_ms=100):
                if dedupe.claim(dedupe_key(m)):
                    delivered.append(m.alert_id)
                else:
                    skipped += 1
                consumer.ack(entry_id)
        for _, m in consumer.read(count=500, block_ms=50):  # duplicates after the last original
            skipped += 0 if dedupe.claim(dedupe_key(m)) else 1
        assert delivered == [m.alert_id for m in burst]
        assert skipped == duplicates
        assert consumer.groups_recreated == 0
    finally:
        server.stop()


_CRASHING_PRODUCER = r"""
import sys, time
from alerts.bus import AlertBus, BusMessage
from alerts.outbox import OutboxPublisher
url, stream, path, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
outbox = OutboxPublisher(AlertBus.from_url(url, stream=stream), path, retry_initial_s=0.05, retry_max_s=0.2)
for i in range(n):
    outbox.publish(BusMessage(f"{i:032x}", "alert", "cam-1", "v1", "g1", "person", 0.9, "2026-01-01T00:00Z"))
print("queued", outbox.queued, outbox.depth, flush=True)
time.sleep(60)
"""


def _wait_line(proc: subprocess.Popen[bytes], prefix: bytes, timeout: float = 15.0) -> bytes:
    assert proc.stdout is not None
    fd, data = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while prefix not in data or not data.split(prefix, 1)[1].count(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            pytest.fail(f"no {prefix!r} line within {timeout:.0f} s: {data!r}")
        chunk = os.read(fd, 65536)
        if not chunk:
            pytest.fail(f"the producer exited ({proc.wait()}) first: {data!r}")
        data += chunk
    return prefix + data.split(prefix, 1)[1].split(b"\n", 1)[0]


def test_the_outbox_survives_a_crash_of_its_process(tmp_path: Path, until: Callable[..., Any]) -> None:
    """A producer queues 50 alerts while Redis is down and is killed -9; a new publisher on the same file
    sends them, once each and in order, when Redis is up."""
    server = RedisServer(tmp_path / "redis", appendonly=True)  # not started yet: connections are refused
    stream = f"test:alerts:{uuid.uuid4().hex[:8]}"
    path = tmp_path / "data" / "outbox.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_PRODUCER, server.url, stream, str(path), "50"],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert _wait_line(proc, b"queued ") == b"queued 50 50"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert outbox_rows(path) == 50
    with server:
        outbox = fast(AlertBus.from_url(server.url, stream=stream), path)
        until("the outbox is drained", lambda: outbox.depth == 0)
        outbox.close()
        assert outbox.drained == 50 and outbox.published == 0
        assert [m.alert_id for m in on_stream(server, stream)] == [message(i).alert_id for i in range(50)]
        assert outbox_rows(path) == 0


def test_a_frozen_redis_does_not_hold_the_publisher(tmp_path: Path, until: Callable[..., Any]) -> None:
    """SIGSTOPped Redis: connections hang instead of failing. The first publish waits the short timeout,
    the next ones queue at once; after SIGCONT everything arrives in order."""
    stream = f"test:alerts:{uuid.uuid4().hex[:8]}"
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        bus = AlertBus.from_url(server.url, stream=stream)
        outbox = fast(bus, tmp_path / "outbox.db", timeout_s=0.3)
        outbox.publish(message(0))
        server.pause()
        started = time.perf_counter()
        outbox.publish(message(1))
        first = time.perf_counter() - started
        later = []
        for i in range(2, 7):
            started = time.perf_counter()
            outbox.publish(message(i))
            later.append(time.perf_counter() - started)
        assert 0.25 < first < 1.0
        assert max(later) < 0.2  # queued on disk, no network
        assert outbox.depth == 6
        time.sleep(0.5)  # the drainer tries (and times out) meanwhile
        server.resume()
        until("the outbox is drained", lambda: outbox.depth == 0)
        outbox.close()
        keys = [dedupe_key(m) for m in on_stream(server, stream)]
        assert list(dict.fromkeys(keys)) == [dedupe_key(message(i)) for i in range(7)]
        # Each timed-out try is executed when Redis wakes up: only the oldest message is retried.
        assert Counter(keys)[dedupe_key(message(1))] >= 1
        assert all(Counter(keys)[dedupe_key(message(i))] == 1 for i in range(2, 7))
        print(f"frozen: message 1 arrived {Counter(keys)[dedupe_key(message(1))]} time(s)")


def test_a_full_outbox_drops_the_oldest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, until: Callable[..., Any]
) -> None:
    server = RedisServer(tmp_path / "redis")  # down
    stream = f"test:alerts:{uuid.uuid4().hex[:8]}"
    outbox = fast(AlertBus.from_url(server.url, stream=stream), tmp_path / "outbox.db", max_items=5)
    with caplog.at_level(logging.WARNING, logger="alerts.outbox"):
        for i in range(8):
            outbox.publish(message(i))
    assert (outbox.depth, outbox.queued, outbox.dropped) == (5, 8, 3)
    dropped = [r for r in caplog.records if r.levelno == logging.ERROR and "dropped" in r.getMessage()]
    assert [r.getMessage().rsplit(" ", 1)[1] for r in dropped] == [message(i).alert_id for i in range(3)]
    assert len([r for r in caplog.records if "does not take alerts" in r.getMessage()]) == 1  # once
    with server:
        until("the outbox is drained", lambda: outbox.depth == 0)
        outbox.close()
        assert [m.alert_id for m in on_stream(server, stream)] == [message(i).alert_id for i in range(3, 8)]


def test_close_leaves_what_it_cannot_send_for_the_next_start(
    tmp_path: Path, until: Callable[..., Any]
) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=True)  # down
    stream = f"test:alerts:{uuid.uuid4().hex[:8]}"
    path = tmp_path / "outbox.db"
    outbox = fast(AlertBus.from_url(server.url, stream=stream), path)
    for i in range(3):
        outbox.publish(message(i))
    started = time.perf_counter()
    outbox.close(timeout=0.3)
    assert time.perf_counter() - started < 2.0
    outbox.publish(message(3))  # after close: still kept, for the next start
    assert outbox_rows(path) == 4
    with server:
        again = fast(AlertBus.from_url(server.url, stream=stream), path)
        until("the outbox is drained", lambda: again.depth == 0)
        again.close()
        assert [m.alert_id for m in on_stream(server, stream)] == [message(i).alert_id for i in range(4)]


def test_maxlen_trimming_applies_to_drained_messages(tmp_path: Path, until: Callable[..., Any]) -> None:
    server = RedisServer(tmp_path / "redis")  # down
    stream = f"test:alerts:{uuid.uuid4().hex[:8]}"
    outbox = fast(AlertBus.from_url(server.url, stream=stream, maxlen=100), tmp_path / "outbox.db")
    for i in range(1500):
        outbox.publish(message(i))
    with server:
        until("the outbox is drained", lambda: outbox.depth == 0, timeout=15)
        outbox.close()
        on = on_stream(server, stream)
        assert 100 <= len(on) < 300
        assert on[-1].alert_id == message(1499).alert_id
