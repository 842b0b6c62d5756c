"""Fixtures for the cluster tests: a client of the session's real Redis, a key prefix of the test's own (the
tests share one server), and a factory of lease keepers that stops them afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from gridwatch.cluster import ClusterKeys, LeaseKeeper
from gridwatch.services import RedisServer


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    yield conn
    conn.close()


@pytest.fixture
def keys() -> ClusterKeys:
    return ClusterKeys(prefix=f"gwtest-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def make_keeper(client: redis.Redis, keys: ClusterKeys) -> Iterator[Callable[..., LeaseKeeper]]:
    """`make_keeper(worker_id, capacity, cameras, **kwargs)`: a LeaseKeeper on the test's keys (cameras: a
    callable or a collection). Started ones are stopped at the end, without releasing."""
    made: list[LeaseKeeper] = []

    def make(worker_id: str, capacity: int, cameras: Any, **kwargs: Any) -> LeaseKeeper:
        source = cameras if callable(cameras) else (lambda: cameras)
        keeper = LeaseKeeper(client, worker_id, capacity, source, keys=keys, **kwargs)
        made.append(keeper)
        return keeper

    yield make
    for keeper in made:
        keeper.stop(release=False, timeout=5)
