"""Redis with a replica and Sentinel, all real redis-server processes: the bus and the leases follow a
failover to the promoted replica (`redis+sentinel://`), a lease confirmed by the replica (WAIT) survives
it, and with a silent replica no lease is trusted: not taken, and not extended past its last confirmed
deadline."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis

from alerts.bus import AlertBus, BusMessage
from alerts.redis_connect import connect
from gridwatch.cluster import ClusterKeys, LeaseKeeper, LeaseStore
from gridwatch.cluster.leases import parse_lease_value

if TYPE_CHECKING:
    from conftest import RedisHA


def _message(alert_id: str) -> BusMessage:
    return BusMessage(alert_id, "alert", "cam", "v1", "g1", "person", 0.9, "2026-12-02T06:00:00+00:00")


def test_the_bus_and_a_confirmed_lease_survive_a_failover_to_the_replica(
    redis_ha: RedisHA, until: Callable[..., Any]
) -> None:
    bus = AlertBus.from_url(redis_ha.sentinel.url, "ha:alerts")
    bus.publish(_message("a" * 32))
    store = LeaseStore(connect(redis_ha.sentinel.url, socket_timeout=2), ClusterKeys("ha"), replicas=1,
                       replica_timeout_ms=1000)  # fmt: skip
    got = store.acquire("worker-a", ["cam"], ttl_ms=60_000)
    assert set(got.tokens) == {"cam"} and not got.unconfirmed
    token = got.tokens["cam"]
    old_primary = redis_ha.primary.port
    assert redis_ha.primary_port() == old_primary

    assert redis_ha.primary.pid is not None
    os.killpg(redis_ha.primary.pid, signal.SIGKILL)  # the primary dies; the sentinel promotes the replica
    until("the sentinel promotes the replica", lambda: redis_ha.primary_port() == redis_ha.replica.port, 30)

    def published() -> bool:
        try:
            bus.publish(_message("b" * 32))
        except (redis.ConnectionError, redis.ReadOnlyError, redis.TimeoutError):
            return False
        return True

    until("the bus publishes to the new primary", published, 15)
    promoted = redis.Redis(port=redis_ha.replica.port)
    assert promoted.info("replication")["role"] == "master"
    ids = [fields[b"alert_id"] for _, fields in promoted.xrange("ha:alerts")]
    assert ids == [b"a" * 32, b"b" * 32]  # the entry from before the failover was replicated
    # the lease the replica confirmed is there: nobody else can take the camera
    assert parse_lease_value(promoted.get("ha:lease:cam")) == ("worker-a", token)
    other = store.acquire("worker-b", ["cam"], ttl_ms=60_000)
    assert other.tokens == {} and "cam" in other.held_by_others
    assert store.renew("worker-a", {"cam": token}, ttl_ms=60_000) == set()  # no replica left to confirm
    bus.close()


def test_with_a_silent_replica_no_lease_is_taken_or_trusted_longer(
    redis_ha: RedisHA, until: Callable[..., Any]
) -> None:
    client = redis.Redis(port=redis_ha.primary.port, socket_timeout=5)
    keys = ClusterKeys("silent")
    store = LeaseStore(client, keys, replicas=1, replica_timeout_ms=150)
    held = store.acquire("w", ["cam-1"], ttl_ms=30_000).tokens
    assert set(held) == {"cam-1"}

    redis_ha.replica.pause()  # frozen: it acknowledges nothing
    try:
        got = store.acquire("w", ["cam-2"], ttl_ms=30_000)
        assert got.tokens == {} and set(got.unconfirmed) == {"cam-2"}
        renewal = store.renew_leases("w", held, ttl_ms=30_000)
        assert renewal.renewed == set() and renewal.unconfirmed == {"cam-1"}

        # a keeper takes nothing it cannot have confirmed, and keeps what it has only to its deadline
        keeper = LeaseKeeper(client, "k", 5, lambda: ["cam-3"], lease_ttl_ms=900, keys=keys, replicas=1,
                             replica_timeout_ms=100)  # fmt: skip
        lost: list[str] = []
        keeper.on_lost = lambda camera, _token: lost.append(camera)
        report = keeper.tick()
        assert report.acquired == () and keeper.owned() == {}
    finally:
        redis_ha.replica.resume()
    until(
        "the keeper takes the camera once the replica confirms",
        lambda: keeper.tick().acquired == ("cam-3",),
        10,
    )
    assert set(keeper.owned()) == {"cam-3"}

    deadline = keeper.held_until()["cam-3"]
    redis_ha.replica.pause()
    try:
        renewals: list[int] = []
        while keeper.owned():  # renewals go on in Redis, unconfirmed: the local deadline never moves
            renewals.append(keeper.tick().renewed)
            assert keeper.held_until().get("cam-3", deadline) == deadline
            assert len(renewals) < 200, "the lease stayed trusted for 10 s with no replica confirming it"
            time.sleep(0.05)
        assert keeper.clock() >= deadline  # dropped at the last confirmed deadline, not before
        assert set(renewals) == {0}  # none counted as renewed
        assert client.get(keys.lease("cam-3")) is not None  # Redis still has it: not lost, not trusted
    finally:
        redis_ha.replica.resume()
    keeper.stop()
