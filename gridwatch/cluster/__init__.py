"""Sharing the cameras among many worker processes through Redis (issue 8).

- `membership`: workers register with a heartbeat and their capacity; `live_workers()`.
- `assignment`: `assign(cameras, workers)`, rendezvous hashing with bounded loads (pure, deterministic).
- `leases`: per-camera leases with fencing tokens (Lua: acquire, renew, release).
- `keeper`: `LeaseKeeper`, one worker's loop making its leases follow the assignment.
- `fencing`: `check_fence`, so a worker that lost a lease learns it before it writes for its camera.
- `view`: `read_cluster_view`, a read-only `ClusterView` of workers, leases and cameras (`gridwatch cluster`).

docs/SCALING.md has the design, the measurements (bench/lease_sim.py) and the capacity planning.
"""

from gridwatch.cluster.assignment import DEFAULT_BALANCE, Assignment, assign, moved
from gridwatch.cluster.fencing import FencedOut, check_fence
from gridwatch.cluster.keeper import LeaseKeeper, TickReport
from gridwatch.cluster.keys import DEFAULT_KEYS, ClusterKeys
from gridwatch.cluster.leases import Acquired, LeaseStore, lease_value, parse_lease_value
from gridwatch.cluster.membership import Membership, WorkerIdInUse, default_worker_id, live_workers
from gridwatch.cluster.view import ClusterView, read_cluster_view

__all__ = [
    "DEFAULT_BALANCE",
    "DEFAULT_KEYS",
    "Acquired",
    "Assignment",
    "ClusterKeys",
    "ClusterView",
    "FencedOut",
    "LeaseKeeper",
    "LeaseStore",
    "Membership",
    "TickReport",
    "WorkerIdInUse",
    "assign",
    "check_fence",
    "default_worker_id",
    "lease_value",
    "live_workers",
    "moved",
    "parse_lease_value",
    "read_cluster_view",
]
