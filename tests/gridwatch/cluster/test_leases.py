"""Per-camera leases: acquire (SET NX PX, with a fencing token), renew and release by the holder only,
expiry."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

from gridwatch.cluster import ClusterKeys, LeaseStore, lease_value


def test_acquire_gives_a_token_and_others_see_it_held(client: redis.Redis, keys: ClusterKeys) -> None:
    store = LeaseStore(client, keys)
    got = store.acquire("a", ["cam1", "cam2"], ttl_ms=5_000)
    assert set(got.tokens) == {"cam1", "cam2"} and not got.held_by_others
    token = got.tokens["cam1"]
    assert client.get(keys.lease("cam1")) == lease_value("a", token).encode()
    assert 4_000 < client.pttl(keys.lease("cam1")) <= 5_000

    other = store.acquire("b", ["cam1", "cam3"], ttl_ms=5_000)
    assert set(other.tokens) == {"cam3"}
    assert 0 < other.held_by_others["cam1"] <= 5_000
    assert store.holder("cam1") == ("a", token)
    assert store.holders(["cam1", "cam2", "cam3", "cam4"]).keys() == {"cam1", "cam2", "cam3"}


def test_acquiring_again_what_one_holds_keeps_the_token(client: redis.Redis, keys: ClusterKeys) -> None:
    store = LeaseStore(client, keys)
    first = store.acquire("a", ["cam"], ttl_ms=1_000).tokens["cam"]
    assert store.acquire("a", ["cam"], ttl_ms=5_000).tokens == {"cam": first}
    assert client.pttl(keys.lease("cam")) > 4_000


def test_only_the_holder_renews_and_releases(client: redis.Redis, keys: ClusterKeys) -> None:
    store = LeaseStore(client, keys)
    token = store.acquire("a", ["cam"], ttl_ms=1_000).tokens["cam"]
    assert store.renew("b", {"cam": token}, ttl_ms=9_000) == set()
    assert store.renew("a", {"cam": token + 1}, ttl_ms=9_000) == set()  # a stale token is not the holder
    assert client.pttl(keys.lease("cam")) <= 1_000
    assert store.renew("a", {"cam": token}, ttl_ms=9_000) == {"cam"}
    assert client.pttl(keys.lease("cam")) > 8_000
    assert store.release("b", {"cam": token}) == set()
    assert store.holder("cam") == ("a", token)
    assert store.release("a", {"cam": token}) == {"cam"}
    assert store.holder("cam") is None
    assert store.renew("a", {"cam": token}, ttl_ms=1_000) == set()  # released: nothing to renew


def test_an_expired_lease_goes_to_the_next_worker_with_a_greater_token(
    client: redis.Redis, keys: ClusterKeys, until: Callable[..., Any]
) -> None:
    store = LeaseStore(client, keys)
    old = store.acquire("a", ["cam"], ttl_ms=150).tokens["cam"]
    new = until("the lease expires and b takes it", lambda: store.acquire("b", ["cam"], 5_000).tokens, 2)
    assert new["cam"] > old
    assert store.renew("a", {"cam": old}, ttl_ms=5_000) == set()  # the old holder cannot extend it
    assert store.release("a", {"cam": old}) == set()
    assert store.holder("cam") == ("b", new["cam"])


def test_tokens_grow_per_camera_across_holders_and_a_lost_counter(
    client: redis.Redis, keys: ClusterKeys
) -> None:
    store = LeaseStore(client, keys)
    tokens = []
    for worker in ("a", "b", "a", "c"):
        token = store.acquire(worker, ["cam"], ttl_ms=5_000).tokens["cam"]
        tokens.append(token)
        store.release(worker, {"cam": token})
    assert tokens == sorted(set(tokens))
    time.sleep(0.005)
    client.delete(keys.fence("cam"))  # Redis lost its data: the counter starts again from the clock
    assert store.acquire("a", ["cam"], ttl_ms=5_000).tokens["cam"] > tokens[-1]


def test_many_cameras_in_batches(client: redis.Redis, keys: ClusterKeys) -> None:
    store = LeaseStore(client, keys, batch=7)
    cameras = [f"cam{i}" for i in range(50)]
    tokens = store.acquire("a", cameras, ttl_ms=5_000).tokens
    assert tokens.keys() == set(cameras)
    assert store.renew("a", tokens, ttl_ms=5_000) == set(cameras)
    assert store.release("a", tokens) == set(cameras)
