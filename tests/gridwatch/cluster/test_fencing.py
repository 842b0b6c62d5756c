"""Fenced writes: a worker that lost a camera's lease learns it before it writes for the camera."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from gridwatch.cluster import ClusterKeys, FencedOut, LeaseStore, check_fence


def test_the_holder_passes_and_a_stale_owner_is_refused_after_the_lease_moved(
    client: redis.Redis, keys: ClusterKeys, until: Callable[..., Any]
) -> None:
    store = LeaseStore(client, keys)
    old = store.acquire("a", ["cam"], ttl_ms=150).tokens["cam"]
    check_fence(client, "cam", "a", old, keys=keys)

    new = until("b takes the expired lease", lambda: store.acquire("b", ["cam"], 5_000).tokens, 2)["cam"]
    with pytest.raises(FencedOut) as refused:
        check_fence(client, "cam", "a", old, keys=keys)
    assert refused.value.holder == ("b", new) and refused.value.token == old
    assert "camera cam" in str(refused.value) and f"held by b with token {new}" in str(refused.value)
    with pytest.raises(FencedOut):  # the same worker with another token is not the holder either
        check_fence(client, "cam", "b", old, keys=keys)
    check_fence(client, "cam", "b", new, keys=keys)


def test_no_lease_at_all_refuses_too(client: redis.Redis, keys: ClusterKeys) -> None:
    with pytest.raises(FencedOut) as refused:
        check_fence(client, "cam", "a", 1, keys=keys)
    assert refused.value.holder is None and "not held by anyone" in str(refused.value)
