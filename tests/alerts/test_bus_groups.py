"""Consumer groups on the alert stream against real Redis servers that the tests kill and restart.

Every server here is the test's own (free port, own data dir): the session one cannot be killed.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from alerts.bus import DEAD_STREAM, AlertBus, BusMessage, Deduper, StreamConsumer, dedupe_key
from gridwatch.services import RedisServer, find_redis_binary

REPO = Path(__file__).resolve().parents[2]


def message(i: int, kind: str = "alert") -> BusMessage:
    return BusMessage(f"{i:032x}", kind, "cam-1", "v1", "g1", "person", 0.9, "2026-01-01T00:00:00+00:00")


def binaries() -> list[Any]:
    return [pytest.param(find_redis_binary(), id="valkey"), pytest.param("redis-server", id="redis")]


@pytest.fixture(params=binaries())
def aof_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", binary=request.param, appendonly=True)
    with server:
        yield server


@pytest.fixture
def stream() -> str:
    return f"test:alerts:{uuid.uuid4().hex[:8]}"


def fresh(server: RedisServer) -> redis.Redis:
    """A new client (the old ones' connections died with the server)."""
    return redis.Redis.from_url(server.url, socket_timeout=5)


def test_group_read_ack_and_pending(aof_server: RedisServer, stream: str) -> None:
    bus = AlertBus.from_url(aof_server.url, stream=stream)
    consumer = StreamConsumer(bus, "dispatch", consumer="c1")
    assert consumer.ensure_group() is True
    assert consumer.ensure_group() is False  # BUSYGROUP is fine
    ids = [bus.publish(message(i)) for i in range(5)]
    got = consumer.read(count=10, block_ms=100)
    assert [entry_id for entry_id, _ in got] == ids
    assert [m.alert_id for _, m in got] == [message(i).alert_id for i in range(5)]
    assert consumer.read(count=10, block_ms=50) == []  # delivered once to the group
    started = time.perf_counter()
    assert consumer.read(block_ms=0) == []  # 0: no wait (BLOCK 0 would wait forever)
    assert time.perf_counter() - started < 1.0
    summary = consumer.pending()
    assert (summary.count, summary.smallest, summary.greatest) == (5, ids[0], ids[-1])
    assert dict(summary.consumers) == {"c1": 5}
    assert consumer.ack(*ids[:3]) == 3
    assert consumer.pending().count == 2
    default = StreamConsumer(bus, "dispatch")
    assert default.consumer == f"{os.uname().nodename}-{os.getpid()}"


def test_read_rides_out_redis_down(
    aof_server: RedisServer, stream: str, caplog: pytest.LogCaptureFixture, until: Callable[..., Any]
) -> None:
    """A consuming loop does not crash while Redis is down: empty reads, one warning, then it goes on with
    the same group (AOF) and its pending list."""
    bus = AlertBus.from_url(aof_server.url, stream=stream)
    consumer = StreamConsumer(bus, "dispatch", consumer="c1", retry_initial_s=0.05, retry_max_s=0.2)
    consumer.ensure_group()
    bus.publish(message(1))
    [(first_id, _)] = consumer.read(block_ms=100)
    aof_server.kill()
    with caplog.at_level(logging.WARNING, logger="alerts.bus"):
        for _ in range(4):
            assert consumer.read(block_ms=100) == []
            assert consumer.ack(first_id) == 0
    assert consumer.failures >= 8
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1
    aof_server.start()
    AlertBus(fresh(aof_server), stream=stream).publish(message(2))
    got = until("read after the restart", lambda: consumer.read(block_ms=100))
    assert [m.alert_id for _, m in got] == [message(2).alert_id]
    assert consumer.failures == 0 and consumer.groups_recreated == 0
    assert consumer.pending().count == 2  # the entry read before the kill is still pending


def test_nogroup_after_restart_without_aof(
    tmp_path: Path, stream: str, caplog: pytest.LogCaptureFixture, binary: str, until: Callable[..., Any]
) -> None:
    server = RedisServer(tmp_path / "redis", binary=binary, appendonly=False).start()
    try:
        bus = AlertBus.from_url(server.url, stream=stream)
        consumer = StreamConsumer(bus, "dispatch", consumer="c1", retry_initial_s=0.05, retry_max_s=0.2)
        consumer.ensure_group()
        bus.publish(message(1))
        assert len(consumer.read(block_ms=100)) == 1
        server.kill()
        server.start()  # no AOF: stream and group are gone
        restarted = AlertBus(fresh(server), stream=stream)
        restarted.publish(message(2))
        restarted.publish(message(3))
        with caplog.at_level(logging.WARNING, logger="alerts.bus"):
            got = until("read after NOGROUP", lambda: consumer.read(block_ms=100))
        assert [m.alert_id for _, m in got] == [message(2).alert_id, message(3).alert_id]
        assert consumer.groups_recreated == 1
        assert any("is gone" in r.getMessage() for r in caplog.records)
        consumer.ack(*(entry_id for entry_id, _ in got))
        restarted.publish(message(4))
        assert [m.alert_id for _, m in consumer.read(block_ms=100)] == [message(4).alert_id]
    finally:
        server.stop()


@pytest.fixture(params=binaries())
def binary(request: pytest.FixtureRequest) -> str:
    return cast(str, request.param)


def test_malformed_entries_go_to_the_dead_letter_stream(
    aof_server: RedisServer, stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    bus = AlertBus.from_url(aof_server.url, stream=stream)
    dead = f"{stream}:dead"
    consumer = StreamConsumer(bus, "dispatch", consumer="c1", dead_stream=dead)
    consumer.ensure_group()
    good = message(7).fields()
    bad: list[dict[Any, Any]] = [
        {"hello": "world"},  # not a bus message at all
        {**good, "score": "high"},
        {**good, "bbox": "[1, 2]"},
        {**good, "bbox": "not json"},
        {**good, "kind": "exploit"},
        {**good, "alert_id": ""},
        {**good, "alert_id": b"\xff\xfe"},  # not UTF-8
    ]
    bad_ids = [cast(bytes, bus.client.xadd(stream, fields)).decode() for fields in bad]
    good_id = bus.publish(message(7))
    with caplog.at_level(logging.ERROR, logger="alerts.bus"):
        got = consumer.read(count=100, block_ms=100)
    assert [(entry_id, m.alert_id) for entry_id, m in got] == [(good_id, message(7).alert_id)]
    assert consumer.dead_lettered == len(bad)
    for bad_id in bad_ids:  # logged with its id
        assert any(bad_id in r.getMessage() for r in caplog.records)
    letters = cast(list[tuple[bytes, dict[bytes, bytes]]], bus.client.xrange(dead))
    assert [f[b"source_id"].decode() for _, f in letters] == bad_ids
    assert letters[0][1][b"field:hello"] == b"world"
    assert letters[1][1][b"group"] == b"dispatch" and b"float" in letters[1][1][b"error"]
    assert consumer.pending().count == 1  # only the good one waits for its ack: the bad ones are acked
    assert consumer.reclaim_idle(0) == [(good_id, message(7))]  # and they are not delivered again
    assert DEAD_STREAM == "gridwatch:alerts:dead"


def test_maxlen_keeps_the_stream_bounded_and_trimmed_pending_entries_are_acked(
    aof_server: RedisServer, stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    bus = AlertBus.from_url(aof_server.url, stream=stream, maxlen=200)
    consumer = StreamConsumer(bus, "dispatch", consumer="c1")
    consumer.ensure_group()
    for i in range(50):
        bus.publish(message(i))
    assert len(consumer.read(count=50, block_ms=100)) == 50  # pending, never acked
    for i in range(50, 3000):
        bus.publish(message(i))
    length = cast(int, bus.client.xlen(stream))
    assert 200 <= length < 400, length  # approximate: whole macro nodes (100 entries) are trimmed
    newest = bus.read_all(count=100_000)[-1][1]
    assert newest.alert_id == message(2999).alert_id
    rescuer = StreamConsumer(bus, "dispatch", consumer="c2")
    with caplog.at_level(logging.WARNING, logger="alerts.bus"):
        assert rescuer.reclaim_idle(0) == []  # the 50 pending entries were trimmed away
    assert rescuer.deleted_acked == 50
    assert any("trimmed" in r.getMessage() for r in caplog.records)
    assert consumer.pending().count == 0


_DYING_CONSUMER = r"""
import sys, time
from alerts.bus import AlertBus, Deduper, StreamConsumer, dedupe_key
url, stream, prefix, want, process = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
bus = AlertBus.from_url(url, stream=stream)
consumer = StreamConsumer(bus, "dispatch", consumer="dying")
dedupe = Deduper(bus.client, prefix=prefix)
got = []
deadline = time.monotonic() + 10
while len(got) < want and time.monotonic() < deadline:
    got += consumer.read(count=want - len(got), block_ms=200)
for _, message in got[:process]:  # sends these, then dies before acking anything
    if dedupe.claim(dedupe_key(message) + ":webhook"):
        print("sent", message.alert_id, flush=True)
print("read", len(got), flush=True)
time.sleep(60)
"""


def _lines_until(proc: subprocess.Popen[bytes], last: str, timeout: float = 15.0) -> list[str]:
    """Lines the subprocess prints, up to one starting with `last` (unbuffered reads: select() and a
    buffered reader do not mix)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line.strip() for line in data.decode().splitlines(keepends=True) if line.endswith("\n")]
        if any(line.startswith(last) for line in lines):
            return lines[: next(i for i, line in enumerate(lines) if line.startswith(last)) + 1]
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            pytest.fail(f"the subprocess printed no {last!r} line within {timeout:.0f} s: {lines}")
        chunk = os.read(fd, 65536)
        if not chunk:
            pytest.fail(f"the subprocess exited ({proc.wait()}) before printing {last!r}: {lines}")
        data += chunk


def test_entries_of_a_killed_consumer_are_reclaimed_and_processed_once(
    aof_server: RedisServer, stream: str, until: Callable[..., Any]
) -> None:
    bus = AlertBus.from_url(aof_server.url, stream=stream)
    StreamConsumer(bus, "dispatch").ensure_group()
    published = [message(i) for i in range(20)]
    for m in published:
        bus.publish(m)
    prefix = f"test:dedupe:{uuid.uuid4().hex[:8]}:"
    proc = subprocess.Popen(
        [sys.executable, "-c", _DYING_CONSUMER, aof_server.url, stream, prefix, "20", "5"],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        lines = _lines_until(proc, "read ")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert lines[-1] == "read 20"
    sent_before = {line.split()[1] for line in lines if line.startswith("sent ")}
    assert len(sent_before) == 5

    rescuer = StreamConsumer(bus, "dispatch", consumer="rescuer")
    assert rescuer.pending().consumers == {"dying": 20}
    assert rescuer.reclaim_idle(60_000) == []  # not idle long enough: the owner may still be working
    dedupe = Deduper(bus.client, prefix=prefix)
    sent_after: list[str] = []
    skipped: list[str] = []
    reclaimed: list[tuple[str, BusMessage]] = []

    def reclaim() -> bool:
        reclaimed.extend(rescuer.reclaim_idle(200, count=7))  # several calls: the cursor is followed
        return len(reclaimed) >= 20

    until("the dead consumer's entries are reclaimed", reclaim)
    for entry_id, m in reclaimed:
        if dedupe.claim(dedupe_key(m) + ":webhook"):
            sent_after.append(m.alert_id)
        else:
            skipped.append(m.alert_id)
        assert rescuer.ack(entry_id) == 1
    assert sorted(m.alert_id for _, m in reclaimed) == sorted(m.alert_id for m in published)
    assert set(skipped) == sent_before  # the second processing of an already processed entry is skipped
    assert sorted([*sent_after, *sent_before]) == sorted(m.alert_id for m in published)  # each once
    assert rescuer.pending().count == 0
    assert rescuer.reclaim_idle(0) == []


def test_deduper_claims_once_until_released(aof_server: RedisServer) -> None:
    client = fresh(aof_server)
    prefix = f"test:dedupe:{uuid.uuid4().hex[:8]}:"
    dedupe = Deduper(client, prefix=prefix, ttl_s=3600)
    key = dedupe_key(message(1, kind="clip")) + ":mqtt"
    assert dedupe.claim(key) is True
    assert dedupe.claim(key) is False
    assert Deduper(client, prefix=prefix).claim(key) is False  # another process, same answer
    assert 3500 < cast(int, client.ttl(prefix + key)) <= 3600
    dedupe.release(key)
    assert dedupe.claim(key) is True
    clip_0 = BusMessage("a" * 32, "clip", "c", "v", "g", "person", 0.9, "t", sequence=0)
    assert dedupe_key(clip_0) != dedupe_key(
        BusMessage("a" * 32, "clip", "c", "v", "g", "person", 0.9, "t", sequence=1)
    )
    assert dedupe_key(clip_0) != dedupe_key(message(0xAAAA))
