"""What a camera cost on machines like this one, kept in Redis, so a starting worker plans on a measurement
instead of the calibration's guess (`worker.expected_activity`).

A worker's measured cost per camera (`CapacityMeter.peak_cost`, once `trust_after` windows were measured)
is written under its machine signature: the CPU model, the cores it may use, the models and their threads,
and the cameras' mean detection rate. A worker starting with the same signature within `max_age_s` (7
days) begins from that cost; any other starts from the calibration as before. Both are replaced by the
worker's own measurements as they come in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import redis

from gridwatch.cluster.keys import DEFAULT_KEYS, ClusterKeys

log = logging.getLogger(__name__)

MAX_AGE_S = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class RememberedCost:
    cost: float  # detector share one camera took (the peak of the worker's recent windows)
    worker_id: str
    measured_at: float  # epoch seconds
    windows: int


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_signature(cores: float, models: Iterable[str], detect_fps: float, cpu: str | None = None) -> str:
    """A short hash of what a camera's cost depends on (see the module's docstring)."""
    parts = [cpu if cpu is not None else cpu_model(), f"{cores:.1f}", *sorted(models), f"{detect_fps:.2f}"]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


class CostMemory:
    def __init__(self, client: redis.Redis, keys: ClusterKeys = DEFAULT_KEYS) -> None:
        self.client = client
        self.keys = keys

    def remember(self, signature: str, cost: float, worker_id: str, windows: int) -> None:
        value = {"cost": cost, "worker": worker_id, "at": time.time(), "windows": windows}
        self.client.hset(self.keys.costs, signature, json.dumps(value))

    def recall(self, signature: str, max_age_s: float = MAX_AGE_S) -> RememberedCost | None:
        """The cost last measured under `signature`, if it is younger than `max_age_s` and well-formed."""
        raw = self.client.hget(self.keys.costs, signature)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            found = RememberedCost(
                float(data["cost"]), str(data["worker"]), float(data["at"]), int(data["windows"])
            )
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the remembered camera cost under %s: %s", signature, exc)
            return None
        if not 0 < found.cost <= 10 or time.time() - found.measured_at > max_age_s:
            return None
        return found
