"""Fenced writes: a worker writes for a camera only while it still holds that camera's lease.

A worker can lose a lease without knowing yet (a long GC pause, a frozen VM, a network cut): its lease
expires and another worker takes the camera. Whatever the old owner then writes must be refused.
`check_fence` compares the lease with the worker's token right before a write. The gap between that
check and the write remains, so each write closes it where it lands: the camera states check the lease
and write in one Lua script (`alerts.camera_status`, its `guard`), and the database checks the token
again in the alert's own transaction (`storage.metadata.fences`): tokens only grow per camera.
"""

from __future__ import annotations

import redis

from gridwatch.cluster.keys import DEFAULT_KEYS, ClusterKeys
from gridwatch.cluster.leases import lease_value, parse_lease_value
from gridwatch.cluster.scripts import text


class FencedOut(RuntimeError):
    """The writer no longer holds the camera's lease (it expired, or another worker has it now)."""

    def __init__(self, camera_id: str, worker_id: str, token: int, holder: tuple[str, int] | None) -> None:
        self.camera_id = camera_id
        self.worker_id = worker_id
        self.token = token
        self.holder = holder
        now = f"held by {holder[0]} with token {holder[1]}" if holder else "not held by anyone"
        super().__init__(
            f"write for camera {camera_id} refused: worker {worker_id} with token {token} no longer holds "
            f"its lease (now {now})"
        )


def check_fence(
    client: redis.Redis,
    camera_id: str,
    worker_id: str,
    token: int,
    *,
    keys: ClusterKeys = DEFAULT_KEYS,
) -> None:
    """Raise `FencedOut` unless the camera's lease holds exactly `worker_id` and `token` now (for a write
    that is not to Redis: check right before it)."""
    value = client.get(keys.lease(camera_id))
    if value is None or text(value) != lease_value(worker_id, token):
        raise FencedOut(camera_id, worker_id, token, parse_lease_value(value))
