"""A read-only picture of the cluster, for `gridwatch cluster`: the live workers (capacity, heartbeat,
leases held), the cameras leased and not, the leases of workers that are not live any more, the balance.

Read-only on purpose: `live_workers()` runs the membership script, which prunes dead workers and bumps the
membership version (a write, and one that wakes every worker's next heartbeat into a full listing). Here
the membership is read with plain commands in one MULTI (TIME, ZRANGE, HGETALL), so the server's clock and
the scores agree, and a worker counts as live exactly as the script would count it: score in the future.
It therefore also works against a read-only replica.

Leases are read with MGET over the lease keys of the known cameras, `CHUNK` keys a command, all chunks in
one pipeline: one round trip, 10,000 cameras in a few tens of milliseconds. Without a camera list (no
database configured) the lease keys are found with SCAN instead, which also sees leases of cameras that
are not enabled any more; with a list, only the listed cameras' leases are counted.

Nothing here prints: the CLI formats a `ClusterView`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from gridwatch.cluster.keys import DEFAULT_KEYS, ClusterKeys
from gridwatch.cluster.leases import parse_lease_value
from gridwatch.cluster.scripts import text

CHUNK = 1000
"""Keys per MGET (and SCAN's COUNT hint): big enough for few commands, small enough not to block Redis."""

UNLEASED_SHOWN = 20
"""How many ids of cameras without a lease the view keeps (the count is always complete)."""

UNKNOWN_HOLDER = "?"
"""The holder of a lease whose value does not parse (written by something else): never a live worker."""


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One live worker. `host`, `pid` and `started_at` (its own clock, epoch seconds) come from the
    description its heartbeat writes, None where that is missing or not JSON."""

    worker_id: str
    capacity: int
    expires_in_s: float  # until its heartbeat runs out, on the Redis server's clock
    leases: int  # leases of the counted cameras it holds now
    host: str | None = None
    pid: int | None = None
    started_at: float | None = None
    description: Mapping[str, Any] = field(default_factory=dict)
    settling: bool = False  # just started: takes no camera until the live workers stayed the same a while

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.worker_id,
            "settling": self.settling,
            "host": self.host,
            "pid": self.pid,
            "started_at": self.started_at,
            "capacity": self.capacity,
            "heartbeat_expires_in_s": round(self.expires_in_s, 3),
            "leases": self.leases,
            "description": dict(self.description),
        }


@dataclass(frozen=True, slots=True)
class ClusterView:
    """What `read_cluster_view` saw. Camera figures are None where the camera list was not known."""

    prefix: str
    server_time: float  # the Redis server's clock, epoch seconds
    workers: tuple[WorkerView, ...]  # live ones, by id
    enabled_cameras: int | None
    cameras_leased: int  # cameras with a lease, whoever holds it
    cameras_unleased: int | None
    unleased_sample: tuple[str, ...]  # the first UNLEASED_SHOWN of them, sorted
    stale_by_worker: Mapping[str, int]  # leases held by workers that are not live: they run out by TTL

    @property
    def live_workers(self) -> int:
        return len(self.workers)

    @property
    def total_capacity(self) -> int:
        return sum(w.capacity for w in self.workers)

    @property
    def stale_leases(self) -> int:
        return sum(self.stale_by_worker.values())

    @property
    def max_leases(self) -> int:
        return max((w.leases for w in self.workers), default=0)

    @property
    def mean_leases(self) -> float:
        """Leases held by live workers over the live workers (0.0 with none)."""
        return sum(w.leases for w in self.workers) / len(self.workers) if self.workers else 0.0

    @property
    def max_over_mean(self) -> float:
        """The busiest live worker's leases over the mean, like `Assignment.balance` (0.0: no leases)."""
        mean = self.mean_leases
        return self.max_leases / mean if mean else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, for `gridwatch cluster --json`."""
        return {
            "prefix": self.prefix,
            "server_time": self.server_time,
            "workers": [w.to_dict() for w in self.workers],
            "totals": {
                "live_workers": self.live_workers,
                "total_capacity": self.total_capacity,
                "enabled_cameras": self.enabled_cameras,
                "cameras_leased": self.cameras_leased,
                "cameras_unleased": self.cameras_unleased,
                "unleased_sample": list(self.unleased_sample),
                "stale_leases": self.stale_leases,
                "stale_by_worker": dict(self.stale_by_worker),
            },
            "balance": {
                "max_leases": self.max_leases,
                "mean_leases": round(self.mean_leases, 3),
                "max_over_mean": round(self.max_over_mean, 3),
            },
        }


@dataclass(frozen=True, slots=True)
class _Member:
    worker_id: str
    capacity: int | None
    expires_in_s: float


def read_cluster_view(
    client: redis.Redis, cameras: Iterable[str] | None, keys: ClusterKeys = DEFAULT_KEYS
) -> ClusterView:
    """The cluster as Redis has it now. `cameras`: the enabled cameras' ids (from the database), or None
    when they are not known (then the leases are found by SCAN). Redis errors propagate: the caller says
    which server did not answer. Writes nothing."""
    now_ms, members = _read_membership(client, keys)
    descriptions = _read_descriptions(client, keys, [m.worker_id for m in members])
    camera_list = sorted(set(cameras)) if cameras is not None else None
    holders = _read_holders(client, keys, camera_list)
    live_ids = {m.worker_id for m in members}
    held = Counter(holders.values())
    workers = tuple(
        _worker_view(m, descriptions.get(m.worker_id, {}), held.get(m.worker_id, 0)) for m in members
    )
    unleased = None if camera_list is None else [c for c in camera_list if c not in holders]
    return ClusterView(
        prefix=keys.prefix,
        server_time=now_ms / 1000,
        workers=workers,
        enabled_cameras=None if camera_list is None else len(camera_list),
        cameras_leased=len(holders),
        cameras_unleased=None if unleased is None else len(unleased),
        unleased_sample=tuple(unleased[:UNLEASED_SHOWN]) if unleased else (),
        stale_by_worker={w: n for w, n in sorted(held.items()) if w not in live_ids},
    )


def _read_membership(client: redis.Redis, keys: ClusterKeys) -> tuple[int, list[_Member]]:
    """(server ms, live workers by id): TIME, the workers' zset and capacities in one MULTI, so a worker
    is live when its score is after this very clock reading, as the membership script decides."""
    pipe = client.pipeline(transaction=True)
    pipe.time()
    pipe.zrange(keys.workers, 0, -1, withscores=True)
    pipe.hgetall(keys.capacities)
    (seconds, micros), scored, capacities = pipe.execute()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    caps = {text(k): int(v) for k, v in capacities.items()}
    members = [
        _Member(text(w), caps.get(text(w)), (score - now_ms) / 1000) for w, score in scored if score > now_ms
    ]
    return now_ms, sorted(members, key=lambda m: m.worker_id)


def _read_descriptions(client: redis.Redis, keys: ClusterKeys, worker_ids: Sequence[str]) -> dict[str, dict]:
    """{worker: its JSON description}; a missing or unreadable one is left out (the view shows '-')."""
    values = _mget(client, [keys.worker(w) for w in worker_ids])
    found: dict[str, dict] = {}
    for worker_id, value in zip(worker_ids, values, strict=True):
        if value is None:
            continue
        try:
            described = json.loads(text(value))
        except ValueError:
            continue
        if isinstance(described, dict):
            found[worker_id] = described
    return found


def _read_holders(client: redis.Redis, keys: ClusterKeys, cameras: list[str] | None) -> dict[str, str]:
    """{camera: worker holding its lease} for the cameras with a lease: MGET over the given cameras'
    lease keys, or SCAN for every lease key when the cameras are not known."""
    if cameras is None:
        lease_keys = sorted({text(k) for k in client.scan_iter(match=_lease_pattern(keys), count=CHUNK)})
        start = len(keys.lease(""))
        cameras = [k[start:] for k in lease_keys]
    else:
        lease_keys = [keys.lease(c) for c in cameras]
    holders: dict[str, str] = {}
    for camera, value in zip(cameras, _mget(client, lease_keys), strict=True):
        holder = _holder(value)
        if holder is not None:
            holders[camera] = holder
    return holders


def _holder(value: Any) -> str | None:
    """The worker of a lease value, None for no lease (one that expired between SCAN and MGET included)."""
    try:
        parsed = parse_lease_value(value)
    except ValueError:
        return UNKNOWN_HOLDER
    return None if parsed is None else parsed[0]


def _mget(client: redis.Redis, keys: Sequence[str]) -> list[Any]:
    """MGET of `keys` in chunks of CHUNK, all in one pipeline (one round trip); values in the keys' order."""
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for chunk in _chunks(keys, CHUNK):
        pipe.mget(chunk)
    return [value for values in pipe.execute() for value in values]


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _lease_pattern(keys: ClusterKeys) -> str:
    """The SCAN pattern of every lease key, the prefix's glob characters escaped."""
    escaped = "".join(f"\\{c}" if c in "*?[]\\" else c for c in keys.prefix)
    return f"{escaped}:lease:*"


def _worker_view(member: _Member, description: Mapping[str, Any], leases: int) -> WorkerView:
    capacity = member.capacity if member.capacity is not None else _int(description.get("capacity")) or 0
    settling = capacity < 0  # published negated while the worker settles (gridwatch.cluster.membership)
    started = description.get("started_at")
    host = description.get("host")
    return WorkerView(
        worker_id=member.worker_id,
        capacity=abs(capacity),
        settling=settling,
        expires_in_s=member.expires_in_s,
        leases=leases,
        host=host if isinstance(host, str) else None,
        pid=_int(description.get("pid")),
        started_at=float(started) if isinstance(started, int | float) else None,
        description=description,
    )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
