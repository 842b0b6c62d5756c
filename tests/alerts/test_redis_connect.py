"""Redis URLs: one server, or the primary Redis Sentinel names (`redis+sentinel://`); checked parts and
clear errors without the password. The failover itself: tests/test_redis_failover.py."""

from __future__ import annotations

import pytest
import redis
from redis.sentinel import SentinelConnectionPool

from alerts.redis_connect import (
    SentinelTarget,
    connect,
    parse_sentinel_url,
    with_options,
)
from gridwatch.services import RedisServer


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("redis+sentinel://10.0.0.1:26379/gridwatch", SentinelTarget((("10.0.0.1", 26379),), "gridwatch")),
        (
            "redis+sentinel://:s%40cret@a:1,b,[::1]:3/main/2?sentinel_password=sp",
            SentinelTarget((("a", 1), ("b", 26379), ("::1", 3)), "main", 2, None, "s@cret", "sp"),
        ),
        ("redis+sentinel://u:p@h/svc", SentinelTarget((("h", 26379),), "svc", 0, "u", "p")),
    ],
)
def test_sentinel_urls_are_read_part_by_part(url: str, target: SentinelTarget) -> None:
    assert parse_sentinel_url(url) == target


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://:topsecret@h:26379", "service name"),
        ("redis+sentinel://:topsecret@h:port/svc", "not a number"),
        ("redis+sentinel://:topsecret@h:70000/svc", "out of range"),
        ("redis+sentinel://:topsecret@/svc", "at least one sentinel"),
        ("redis+sentinel://:topsecret@h/svc/x", "database"),
        ("redis+sentinel://:topsecret@h/svc/0/extra", "not 3 parts"),
        ("redis+sentinel://:topsecret@h/svc?db=1", "unknown"),
    ],
)
def test_a_bad_sentinel_url_is_refused_without_its_password(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        parse_sentinel_url(url)
    assert "topsecret" not in str(refused.value)


def test_plain_urls_connect_directly_and_options_carry_over(redis_server: RedisServer) -> None:
    client = connect(redis_server.url, socket_timeout=3)
    assert client.ping()
    fast = with_options(client, socket_timeout=0.5)
    assert fast is not client and fast.ping()
    assert fast.connection_pool.connection_kwargs["socket_timeout"] == 0.5


def test_a_sentinel_client_keeps_following_the_service_with_new_options() -> None:
    client = connect("redis+sentinel://127.0.0.1:1/gridwatch", socket_timeout=1)  # lazy: nothing dialled
    assert isinstance(client.connection_pool, SentinelConnectionPool)
    fast = with_options(client, socket_timeout=0.25)
    pool = fast.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "gridwatch"
    assert pool.connection_kwargs["socket_timeout"] == 0.25
    with pytest.raises(redis.exceptions.ConnectionError):  # no sentinel there: a plain "Redis is away"
        fast.ping()
