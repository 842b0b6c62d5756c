"""Redis key names of the cluster: one place, so a test (or a second deployment on the same Redis) can use
its own prefix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClusterKeys:
    """Key names under `prefix` (default `gridwatch`):

    - `{prefix}:lease:{camera}`: the camera's lease, `"{token}:{worker}"`, with a TTL;
    - `{prefix}:fence:{camera}`: the camera's fencing-token counter (no TTL, never deleted);
    - `{prefix}:worker:{worker}`: a live worker's JSON description, with a TTL (its heartbeat);
    - `{prefix}:workers`: sorted set of workers, scored by when their heartbeat runs out (server ms);
    - `{prefix}:workers:capacity`: hash worker -> how many cameras it can take;
    - `{prefix}:workers:version`: a counter bumped whenever the live workers or a capacity change;
    - `{prefix}:workers:cost`: hash machine signature -> the per-camera cost last measured on such a
      machine (JSON), which a starting worker of the same kind begins with (`capacity.CostMemory`);
    - `{prefix}:frames:{worker}`: the channel on which a worker takes requests for a camera's picture, and
      `{prefix}:frame:{request}` the list its answer is pushed to (`gridwatch.live_frames`).
    """

    prefix: str = "gridwatch"

    def lease(self, camera_id: str) -> str:
        return f"{self.prefix}:lease:{camera_id}"

    def fence(self, camera_id: str) -> str:
        return f"{self.prefix}:fence:{camera_id}"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    @property
    def capacities(self) -> str:
        return f"{self.prefix}:workers:capacity"

    @property
    def membership_version(self) -> str:
        return f"{self.prefix}:workers:version"

    @property
    def costs(self) -> str:
        return f"{self.prefix}:workers:cost"

    def frame_requests(self, worker_id: str) -> str:
        return f"{self.prefix}:frames:{worker_id}"

    def frame_reply(self, request_id: str) -> str:
        return f"{self.prefix}:frame:{request_id}"


DEFAULT_KEYS = ClusterKeys()
