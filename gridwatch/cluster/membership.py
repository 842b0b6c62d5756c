"""Cluster membership: live workers and their capacities, kept by heartbeats in Redis.

A worker's heartbeat is one Lua script, so its writes agree. It sets `{prefix}:worker:{id}` (its JSON
description, with a TTL) and scores it in the sorted set `{prefix}:workers` with the moment its heartbeat
runs out, on the server's clock (so the machines' clocks do not matter). It writes the worker's capacity
in `{prefix}:workers:capacity`. A worker is live while its score is in the future. One that stops
heartbeating (crashed, frozen, cut off) drops out after its TTL: the next heartbeat of any worker prunes
it. `deregister` removes it at once, on a clean shutdown.

A worker still settling after its start (`LeaseKeeper`'s cold start) publishes its capacity negated: it counts
in the assignment with the capacity's absolute value, takes nothing yet, and the others keep the cameras the
assignment gives it until it publishes the capacity as it is.

Every change to the live set or a capacity bumps `{prefix}:workers:version`. A heartbeat sends the
version its worker last saw and gets the list back only when it changed, so a heartbeat costs O(log N),
not O(N): with 700 workers heartbeating every second, the full list every time would be 5 MB/s from Redis.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Mapping
from typing import Any

import redis

from gridwatch.cluster.keys import DEFAULT_KEYS, ClusterKeys
from gridwatch.cluster.scripts import LuaScript, text

# Lua shared by the scripts. The version counter starts from the server's clock in ms when it is missing
# (a Redis restarted without its data), so it never goes back to a value a worker has cached.
_LIB = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function bump(version_key)
  if redis.call('EXISTS', version_key) == 0 then redis.call('SET', version_key, now_ms()) end
  return redis.call('INCR', version_key)
end
local function current(version_key)
  local v = redis.call('GET', version_key)
  if not v then return bump(version_key) end
  return tonumber(v)
end
local function prune(zset, caps, now)
  local gone = redis.call('ZRANGEBYSCORE', zset, '-inf', now)
  if #gone > 0 then
    redis.call('ZREM', zset, unpack(gone))
    redis.call('HDEL', caps, unpack(gone))
  end
  return #gone
end
local function listing(version, zset, caps, now)
  local ids = redis.call('ZRANGEBYSCORE', zset, '(' .. now, '+inf')
  local out = {version}
  if #ids > 0 then
    local capacity = redis.call('HMGET', caps, unpack(ids))
    for i = 1, #ids do
      out[#out + 1] = ids[i]
      out[#out + 1] = capacity[i] or '0'
    end
  end
  return out
end
"""

# KEYS: workers zset, capacity hash, version. Returns {version, id, capacity, id, capacity, ...}.
_LIVE = (
    _LIB
    + """
local now = now_ms()
local version
if prune(KEYS[1], KEYS[2], now) > 0 then version = bump(KEYS[3]) else version = current(KEYS[3]) end
return listing(version, KEYS[1], KEYS[2], now)
"""
)

# KEYS: worker key, workers zset, capacity hash, version. ARGV: id, capacity, ttl ms, description, "nx" or
# "", the version the caller has ("" for none). Returns 0 when "nx" was asked and the worker key exists
# (the id is taken); {version} when the caller's version is current; else {version, id, capacity, ...}.
_HEARTBEAT = (
    _LIB
    + """
if ARGV[5] == 'nx' then
  if not redis.call('SET', KEYS[1], ARGV[4], 'NX', 'PX', ARGV[3]) then return 0 end
else
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[3])
end
local now = now_ms()
local changed = prune(KEYS[2], KEYS[3], now)
changed = changed + redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
  changed = changed + 1
end
local version
if changed > 0 then version = bump(KEYS[4]) else version = current(KEYS[4]) end
if string.format('%d', version) == ARGV[6] then return {version} end
return listing(version, KEYS[2], KEYS[3], now)
"""
)

# KEYS: worker key, workers zset, capacity hash, version. ARGV: id.
_DEREGISTER = (
    _LIB
    + """
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if redis.call('ZREM', KEYS[2], ARGV[1]) > 0 then bump(KEYS[4]) end
return 1
"""
)

_live_script = LuaScript(_LIVE)
_heartbeat_script = LuaScript(_HEARTBEAT)
_deregister_script = LuaScript(_DEREGISTER)


class WorkerIdInUse(RuntimeError):
    """Another live worker registered with this id: two processes would claim the same leases."""


def default_worker_id() -> str:
    """`hostname-pid-random`: unique per process, and a restarted process is a new worker."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _parse_listing(reply: Any) -> tuple[int, dict[str, int] | None]:
    """(version, {worker: capacity}) from a listing; the dict is None for a bare {version}."""
    version = int(reply[0])
    if len(reply) == 1:
        return version, None
    items = [text(v) for v in reply[1:]]
    return version, {items[i]: int(items[i + 1]) for i in range(0, len(items), 2)}


def live_workers(client: redis.Redis, keys: ClusterKeys = DEFAULT_KEYS) -> dict[str, int]:
    """{worker id: capacity} of the workers whose heartbeat has not run out (negative: still settling)."""
    _, live = _parse_listing(_live_script(client, [keys.workers, keys.capacities, keys.membership_version]))
    return live or {}


class Membership:
    """One worker's registration. `ttl_ms`: how long after its last heartbeat a worker counts as live."""

    def __init__(
        self,
        client: redis.Redis,
        worker_id: str,
        capacity: int,
        *,
        ttl_ms: int = 10_000,
        keys: ClusterKeys = DEFAULT_KEYS,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, not {capacity}")
        self.client = client
        self.worker_id = worker_id
        self.capacity = capacity
        self.ttl_ms = ttl_ms
        self.keys = keys
        self.registered = False
        self.settling = False  # published as a negated capacity (see the module docstring)
        self.version: int | None = None  # of the membership last read
        self._live: dict[str, int] = {}
        self._info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": time.time(),
            **(info or {}),
        }

    def register(self) -> dict[str, int]:
        """First heartbeat; raises `WorkerIdInUse` if a live worker has this id. Returns the live workers."""
        self.version = None
        live = self._beat("nx")
        self.registered = True
        return live

    def heartbeat(self, capacity: int | None = None) -> dict[str, int]:
        """Refresh the registration (and the capacity, if given: measured capacities change) and return
        the live workers, this one included, in one round trip."""
        if capacity is not None:
            if capacity < 0:
                raise ValueError(f"capacity must be >= 0, not {capacity}")
            self.capacity = capacity
        return self._beat("")

    def deregister(self) -> None:
        _deregister_script(
            self.client,
            [self.keys.worker(self.worker_id), self.keys.workers, self.keys.capacities,
             self.keys.membership_version],
            [self.worker_id],
        )  # fmt: skip
        self.registered = False
        self.version = None

    def _beat(self, mode: str) -> dict[str, int]:
        description = json.dumps(
            {**self._info, "capacity": self.capacity, "settling": self.settling}, separators=(",", ":")
        )
        published = -self.capacity if self.settling else self.capacity
        reply = _heartbeat_script(
            self.client,
            [self.keys.worker(self.worker_id), self.keys.workers, self.keys.capacities,
             self.keys.membership_version],
            [self.worker_id, published, self.ttl_ms, description, mode,
             "" if self.version is None else str(self.version)],
        )  # fmt: skip
        if reply == 0:
            raise WorkerIdInUse(f"worker id {self.worker_id!r} is already registered and live")
        version, live = _parse_listing(reply)
        if live is not None:
            self._live = live
        self.version = version
        return dict(self._live)
