"""Failed-login limits: a sliding window of failures per key (username, client IP).

In one process (`FailureWindow`), or, where the API has Redis, shared by every API process in Redis
(`RedisFailureWindow`: a sorted set of failure times per key, on Redis's clock), so that two replicas behind
a load balancer do not each allow the limit. While Redis does not answer, the shared window falls back to
its process's own (a login is never refused, nor let through unlimited, because Redis is away).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import redis

log = logging.getLogger(__name__)


class FailureWindow:
    """At most `limit` failures of a key within `window_s` seconds; then the key waits until the oldest of
    them is `window_s` old. Keys are forgotten once their failures are; at most `max_keys` are kept."""

    def __init__(
        self,
        limit: int,
        window_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("a failure window needs limit >= 1 and window_s > 0")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may try again; 0 when it may now."""
        with self._lock:
            now = self._clock()
            failures = self._live(key, now)
            if failures is None or len(failures) < self.limit:
                return 0.0
            return max(0.0, failures[0] + self.window_s - now)

    def failed(self, key: str) -> None:
        with self._lock:
            now = self._clock()
            failures = self._live(key, now)
            if failures is None:
                if len(self._failures) >= self._max_keys:
                    self._prune(now)
                failures = self._failures[key] = deque(maxlen=self.limit)
            failures.append(now)

    def clear(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def _live(self, key: str, now: float) -> deque[float] | None:
        failures = self._failures.get(key)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return None
        return failures

    def _prune(self, now: float) -> None:
        for key in list(self._failures):
            self._live(key, now)
        while len(self._failures) >= self._max_keys:  # still full: forget the keys seen longest ago
            del self._failures[next(iter(self._failures))]


_RETRY_AFTER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then return '0' end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tostring(math.max(0, tonumber(oldest[2]) + tonumber(ARGV[2]) - now))
"""

_FAILED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZADD', KEYS[1], now, t[1] .. '.' .. t[2] .. '.' .. ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[1])
if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1) end
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])))
return 1
"""


class RedisFailureWindow:
    """`FailureWindow` in Redis, shared by the processes that use the same `prefix`; a Redis error falls
    back to `local` (logged once per outage)."""

    def __init__(self, client: Any, prefix: str, local: FailureWindow) -> None:
        self.client, self.prefix, self.local = client, prefix, local
        self.limit, self.window_s = local.limit, local.window_s
        self._retry_after = client.register_script(_RETRY_AFTER)
        self._failed = client.register_script(_FAILED)
        self._down = False

    def _key(self, key: str) -> str:
        return f"{self.prefix}:{hashlib.sha256(key.encode()).hexdigest()[:32]}"  # no user name in the key

    def retry_after(self, key: str) -> float:
        try:
            wait = float(self._retry_after(keys=[self._key(key)], args=[self.limit, self.window_s]))
        except redis.RedisError as exc:
            return self._fallback(exc).retry_after(key)
        self._up()
        # this process's own count too: failures it counted while Redis was away are not in Redis
        return max(wait, self.local.retry_after(key))

    def failed(self, key: str) -> None:
        self.local.failed(key)  # also here: it is what counts while Redis is away
        try:
            self._failed(keys=[self._key(key)], args=[self.limit, self.window_s, secrets.token_hex(4)])
        except redis.RedisError as exc:
            self._fallback(exc)
        else:
            self._up()

    def clear(self, key: str) -> None:
        self.local.clear(key)
        try:
            self.client.delete(self._key(key))
        except redis.RedisError as exc:
            self._fallback(exc)

    def _fallback(self, exc: Exception) -> FailureWindow:
        if not self._down:
            log.warning("login limits: Redis does not answer (%s); counting in this process meanwhile", exc)
            self._down = True
        return self.local

    def _up(self) -> None:
        if self._down:
            log.info("login limits: Redis answers again; counting there")
            self._down = False


class LoginLimiter:
    """Failed logins per username and per client IP (defaults: 5 and 20 in 5 minutes)."""

    def __init__(
        self,
        *,
        per_user: int = 5,
        per_ip: int = 20,
        window_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.users: FailureWindow | RedisFailureWindow = FailureWindow(per_user, window_s, clock=clock)
        self.ips: FailureWindow | RedisFailureWindow = FailureWindow(per_ip, window_s, clock=clock)

    def share(self, client: Any, prefix: str = "gridwatch:login-failures") -> None:
        """Count in Redis from now on, with every API process that shares `client`'s server."""
        if isinstance(self.users, FailureWindow) and isinstance(self.ips, FailureWindow):
            self.users = RedisFailureWindow(client, f"{prefix}:user", self.users)
            self.ips = RedisFailureWindow(client, f"{prefix}:ip", self.ips)

    @staticmethod
    def _user_key(username: str) -> str:
        return username.strip().casefold()[:128]

    def retry_after(self, username: str | None, ip: str | None) -> float:
        waits = [self.ips.retry_after(ip or "-")]
        if username is not None:
            waits.append(self.users.retry_after(self._user_key(username)))
        return max(waits)

    def failed(self, username: str | None, ip: str | None) -> None:
        self.ips.failed(ip or "-")
        if username is not None:
            self.users.failed(self._user_key(username))

    def succeeded(self, username: str) -> None:
        self.users.clear(self._user_key(username))
