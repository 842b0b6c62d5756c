"""Workers register with a heartbeat and a capacity, and drop out when it stops."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis

from gridwatch.cluster import ClusterKeys, Membership, WorkerIdInUse, live_workers


def test_workers_register_with_their_capacity_and_are_listed(client: redis.Redis, keys: ClusterKeys) -> None:
    a = Membership(client, "a", 40, keys=keys, info={"zone": "north"})
    b = Membership(client, "b", 60, keys=keys)
    assert a.register() == {"a": 40}
    assert b.register() == {"a": 40, "b": 60}
    assert live_workers(client, keys) == {"a": 40, "b": 60}
    described = json.loads(client.get(keys.worker("a")) or b"{}")
    assert described["capacity"] == 40 and described["zone"] == "north" and "host" in described
    assert 0 < client.pttl(keys.worker("a")) <= 10_000


def test_a_heartbeat_publishes_a_new_capacity(client: redis.Redis, keys: ClusterKeys) -> None:
    a = Membership(client, "a", 40, keys=keys)
    a.register()
    assert a.heartbeat(capacity=25) == {"a": 25}
    assert live_workers(client, keys) == {"a": 25}


def test_an_id_that_is_live_cannot_register_twice(client: redis.Redis, keys: ClusterKeys) -> None:
    Membership(client, "a", 1, keys=keys).register()
    with pytest.raises(WorkerIdInUse):
        Membership(client, "a", 1, keys=keys).register()


def test_a_worker_that_stops_heartbeating_disappears_after_its_ttl(
    client: redis.Redis, keys: ClusterKeys, until: Callable[..., Any]
) -> None:
    quiet = Membership(client, "quiet", 10, ttl_ms=300, keys=keys)
    steady = Membership(client, "steady", 10, ttl_ms=5_000, keys=keys)
    quiet.register()
    steady.register()
    assert set(live_workers(client, keys)) == {"quiet", "steady"}
    until("the quiet worker drops out", lambda: live_workers(client, keys) == {"steady": 10}, timeout=2)
    # the reader pruned it from the set and the hash; its own key expired by itself
    assert client.zscore(keys.workers, "quiet") is None
    assert client.hget(keys.capacities, "quiet") is None
    assert client.exists(keys.worker("quiet")) == 0
    assert quiet.heartbeat() == {"quiet": 10, "steady": 10}  # it comes back with its next heartbeat


def test_deregister_removes_a_worker_at_once(client: redis.Redis, keys: ClusterKeys) -> None:
    a = Membership(client, "a", 5, keys=keys)
    a.register()
    a.deregister()
    assert live_workers(client, keys) == {}
    assert client.exists(keys.worker("a"), keys.workers, keys.capacities) == 0
    a.register()  # the id is free again


def test_every_change_reaches_the_others_and_quiet_heartbeats_keep_the_version(
    client: redis.Redis, keys: ClusterKeys, until: Callable[..., Any]
) -> None:
    a = Membership(client, "a", 10, keys=keys)
    b = Membership(client, "b", 10, keys=keys)
    a.register()
    b.register()
    assert a.heartbeat() == {"a": 10, "b": 10}
    seen = a.version
    assert a.heartbeat() == {"a": 10, "b": 10} and a.version == seen  # nothing changed: the cached list
    b.heartbeat(capacity=3)
    assert a.heartbeat() == {"a": 10, "b": 3} and a.version is not None and seen is not None
    assert a.version > seen
    short = Membership(client, "short", 1, ttl_ms=200, keys=keys)
    short.register()
    assert a.heartbeat() == {"a": 10, "b": 3, "short": 1}
    until("a's heartbeat sees the expired worker go", lambda: "short" not in a.heartbeat(), timeout=2)
    b.deregister()
    assert a.heartbeat() == {"a": 10}


def test_a_lost_version_counter_starts_above_any_cached_one(client: redis.Redis, keys: ClusterKeys) -> None:
    a = Membership(client, "a", 10, keys=keys)
    a.register()
    cached = a.version
    client.delete(keys.membership_version, keys.workers, keys.capacities)  # Redis lost its data
    Membership(client, "b", 10, keys=keys).register()
    assert a.heartbeat() == {"a": 10, "b": 10}
    assert a.version is not None and cached is not None and a.version > cached
