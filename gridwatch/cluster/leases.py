"""Per-camera leases in Redis, with fencing tokens.

A lease is the key `{prefix}:lease:{camera}` holding `"{token}:{worker}"` with a TTL in milliseconds. It is
taken only where the key is absent (SET NX PX semantics), and the same Lua script increments the camera's
fencing counter `{prefix}:fence:{camera}` (INCR) and writes the new token into the lease, so tokens only
grow and each lease has its own. Renew and release compare the whole value first: a worker can only extend
or drop a lease it still holds, never one that expired and went to someone else.

A new fence counter starts at the server's clock in milliseconds, not at 0, so tokens keep growing even if
Redis restarts without its data (a DB row stamped with an old token stays older than any new one).

Every call takes many cameras at once (one EVALSHA per `batch` cameras): a worker renews all its leases
in one round trip.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from gridwatch.cluster.keys import DEFAULT_KEYS, ClusterKeys
from gridwatch.cluster.scripts import LuaScript, text

# KEYS: lease1, fence1, lease2, fence2, ... ARGV: worker, ttl ms. Per camera: the token (> 0) if the lease
# is now this worker's (new, or already its own: extended), else minus the holder's remaining ms (< 0).
_ACQUIRE = LuaScript("""
local worker, ttl = ARGV[1], ARGV[2]
local out = {}
for i = 1, #KEYS, 2 do
  local lease, fence = KEYS[i], KEYS[i + 1]
  local held = redis.call('GET', lease)
  if not held then
    if redis.call('EXISTS', fence) == 0 then
      local t = redis.call('TIME')
      redis.call('SET', fence, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
    end
    local token = redis.call('INCR', fence)
    redis.call('SET', lease, token .. ':' .. worker, 'PX', ttl)
    out[#out + 1] = token
  else
    local sep = string.find(held, ':', 1, true)
    if sep and string.sub(held, sep + 1) == worker then
      redis.call('PEXPIRE', lease, ttl)
      out[#out + 1] = tonumber(string.sub(held, 1, sep - 1))
    else
      local left = redis.call('PTTL', lease)
      if left < 1 then left = 1 end
      out[#out + 1] = -left
    end
  end
end
return out
""")

# KEYS: leases. ARGV: ttl ms, then the value each lease must hold. Per camera 1 (extended) or 0 (not ours).
_RENEW = LuaScript("""
local out = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i + 1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
""")

# KEYS: leases. ARGV: the value each lease must hold. Per camera 1 (deleted) or 0 (not ours).
_RELEASE = LuaScript("""
local out = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i] then
    redis.call('DEL', KEYS[i])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
""")

# KEYS: fence. ARGV: the least value. The counter after (raised to it if it was lower or missing).
_RAISE_FENCE = LuaScript("""
local now = tonumber(redis.call('GET', KEYS[1]) or '0')
local least = tonumber(ARGV[1])
if now < least then
  redis.call('SET', KEYS[1], least)
  return least
end
return now
""")


def lease_value(worker_id: str, token: int) -> str:
    return f"{token}:{worker_id}"


def parse_lease_value(value: Any) -> tuple[str, int] | None:
    """(worker, token) from a lease's value, None for no lease."""
    if value is None:
        return None
    token, _, worker = text(value).partition(":")
    return worker, int(token)


@dataclass(frozen=True, slots=True)
class Acquired:
    """What an acquire got: tokens of the leases now held, the remaining ms of those others hold, and
    (with `replicas`) the tokens of leases taken in Redis that the replicas did not confirm in time."""

    tokens: Mapping[str, int]
    held_by_others: Mapping[str, int]
    unconfirmed: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Renewal:
    """Leases extended (and confirmed by the replicas, with `replicas`), and those extended in Redis that
    the replicas did not confirm in time: still this worker's, but not to be trusted longer."""

    renewed: set[str]
    unconfirmed: set[str]


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class LeaseStore:
    """Leases in Redis. With `replicas` > 0, every acquire and renewal is followed, on the same connection,
    by `WAIT replicas replica_timeout_ms`: a lease counts only once that many replicas have it, so a
    failover to one of them (Sentinel promotes the most up-to-date) cannot hand the camera to a second
    worker while the first still believes in its lease."""

    def __init__(
        self,
        client: redis.Redis,
        keys: ClusterKeys = DEFAULT_KEYS,
        batch: int = 500,
        *,
        replicas: int = 0,
        replica_timeout_ms: int = 100,
    ) -> None:
        self.client = client
        self.keys = keys
        self.batch = batch
        self.replicas = replicas
        self.replica_timeout_ms = replica_timeout_ms

    def _run(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, bool]:
        """The script's result, and whether `replicas` replicas confirmed it (True without replicas)."""
        if self.replicas <= 0:
            return script(self.client, keys, args), True
        pipe = self.client.pipeline(transaction=False)  # one connection: WAIT covers the script's writes
        pipe.eval(script.source, len(keys), *keys, *args)
        pipe.wait(self.replicas, self.replica_timeout_ms)
        result, acknowledged = pipe.execute()
        return result, int(acknowledged) >= self.replicas

    def acquire(self, worker_id: str, cameras: Iterable[str], ttl_ms: int) -> Acquired:
        tokens: dict[str, int] = {}
        others: dict[str, int] = {}
        unconfirmed: dict[str, int] = {}
        for chunk in _chunks(list(cameras), self.batch):
            keys = [k for c in chunk for k in (self.keys.lease(c), self.keys.fence(c))]
            results, confirmed = self._run(_ACQUIRE, keys, [worker_id, ttl_ms])
            for camera, result in zip(chunk, results, strict=True):
                if int(result) > 0:
                    (tokens if confirmed else unconfirmed)[camera] = int(result)
                else:
                    others[camera] = -int(result)
        return Acquired(tokens, others, unconfirmed)

    def renew(self, worker_id: str, leases: Mapping[str, int], ttl_ms: int) -> set[str]:
        """Extend the given leases ({camera: token}) that are still this worker's; the cameras renewed
        (and confirmed, with `replicas`)."""
        return self.renew_leases(worker_id, leases, ttl_ms).renewed

    def renew_leases(self, worker_id: str, leases: Mapping[str, int], ttl_ms: int) -> Renewal:
        """`renew`, telling apart the leases that are not this worker's any more (in neither set) from
        those extended but not confirmed by the replicas in time."""
        renewed: set[str] = set()
        unconfirmed: set[str] = set()
        for chunk in _chunks(list(leases), self.batch):
            values = [lease_value(worker_id, leases[c]) for c in chunk]
            keys = [self.keys.lease(c) for c in chunk]
            results, confirmed = self._run(_RENEW, keys, [ttl_ms, *values])
            for camera, ok in zip(chunk, results, strict=True):
                if int(ok):
                    (renewed if confirmed else unconfirmed).add(camera)
        return Renewal(renewed, unconfirmed)

    def release(self, worker_id: str, leases: Mapping[str, int]) -> set[str]:
        """Delete the given leases that are still this worker's; the cameras released."""
        released: set[str] = set()
        for chunk in _chunks(list(leases), self.batch):
            values = [lease_value(worker_id, leases[c]) for c in chunk]
            keys = [self.keys.lease(c) for c in chunk]
            for camera, ok in zip(chunk, _RELEASE(self.client, keys, values), strict=True):
                if int(ok):
                    released.add(camera)
        return released

    def raise_fence(self, camera_id: str, at_least: int) -> int:
        """Raise the camera's token counter to `at_least` if it is lower (a Redis that lost its latest
        writes, AOF everysec, hands out tokens the database has seen already); the counter now. Raising a
        counter never lets an old token through: tokens only grow."""
        return int(_RAISE_FENCE(self.client, [self.keys.fence(camera_id)], [int(at_least)]))

    def holders(self, cameras: Iterable[str]) -> dict[str, tuple[str, int]]:
        """{camera: (worker, token)} for the cameras that have a lease now (MGET)."""
        cameras = list(cameras)
        found: dict[str, tuple[str, int]] = {}
        for chunk in _chunks(cameras, self.batch):
            values = self.client.mget([self.keys.lease(c) for c in chunk])
            for camera, value in zip(chunk, values, strict=True):
                parsed = parse_lease_value(value)
                if parsed is not None:
                    found[camera] = parsed
        return found

    def holder(self, camera_id: str) -> tuple[str, int] | None:
        return parse_lease_value(self.client.get(self.keys.lease(camera_id)))
