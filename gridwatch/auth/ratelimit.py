"""Failed-login limits: a sliding window of failures per key (username, client IP), in this process only.

Several API processes each count their own failures; a restart forgets them. Enough against guessing at
one box's login form; a county deployment behind one proxy should also limit at the proxy.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


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
        self.users = FailureWindow(per_user, window_s, clock=clock)
        self.ips = FailureWindow(per_ip, window_s, clock=clock)

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
