"""Failed-login limits shared by API processes through a real Redis: failures counted by one process lock
the user name in the other; a success clears it; while Redis is away each process counts its own."""

from __future__ import annotations

from pathlib import Path

import redis

from gridwatch.auth.ratelimit import LoginLimiter
from gridwatch.services import RedisServer


def test_two_api_processes_count_failures_together(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.delete(*client.keys("gridwatch:login-failures:*") or ["none"])
    a, b = LoginLimiter(per_user=5, per_ip=20, window_s=60), LoginLimiter(per_user=5, per_ip=20, window_s=60)
    a.share(client)
    b.share(client)
    for i in range(3):
        a.failed("Li", f"10.0.0.{i}")
    for i in range(2):
        b.failed("li ", f"10.0.1.{i}")  # the same user name, as typed differently
    assert a.retry_after("li", "10.9.9.9") > 55 and b.retry_after("LI", "10.9.9.9") > 55
    assert b.retry_after("someone-else", "10.9.9.9") == 0
    assert not any(b"li" in key.lower().split(b":")[-1] for key in client.keys("gridwatch:login-failures:*"))
    a.succeeded("li")
    assert b.retry_after("li", "10.9.9.9") == 0


def test_while_redis_is_away_each_process_counts_its_own(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", binary="redis-server").start()
    client = redis.Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    limiter = LoginLimiter(per_user=2, per_ip=20, window_s=60)
    limiter.share(client)
    limiter.failed("li", "10.0.0.1")
    server.stop()
    assert limiter.retry_after("li", "10.0.0.1") == 0  # one failure: not locked, and no error
    limiter.failed("li", "10.0.0.1")
    assert limiter.retry_after("li", "10.0.0.1") > 55  # both counted here
