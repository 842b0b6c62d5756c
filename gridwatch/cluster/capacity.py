"""A worker's capacity, measured: how many cameras its detector can serve, published with its heartbeats.

The detector loop's cost is what limits a worker: every camera it holds adds the share of the detector's
time its frames take. `CapacityMeter` turns that into a number of cameras:

- **At start**, before any camera is held, the cost is calibrated: the models' wall time per whole frame,
  timed on this machine (`DetectorLoop.seconds_per_frame`), times the frames a camera sends them: its
  detection rate for the share of the time something moves in view (`worker.expected_activity`, 0.25),
  one refresh every `models.still_refresh_s` the rest of the time. (Every frame of every camera would be
  the worst case: 2 cameras at 2 frames/s on this development VM's 160 ms per frame, where the pipeline
  benchmark serves 16 with people in view 13 % of the time, docs/PERFORMANCE.md.)
- **While running**, each window (`window_s`, 60 s) measures the load `u`, the larger of the detector's
  busy share (busy seconds over wall seconds) and the process's share of the CPU cores it may use (decoding
  and recording cost CPU too: on a machine where they, not the detector, are the limit, this one decides),
  and the mean number of cameras held `n`: one camera costs `u / n`.
- The capacity is `target_load / peak cost`, where the peak is the highest cost of the last `memory`
  windows (30: half an hour); the calibration counts too until `trust_after` (5) windows were measured. A
  quiet hour does not make a worker take cameras it cannot serve when the morning traffic comes; a busy
  one lowers it at once.
- It falls at once (an overloaded worker gives cameras up on its next tick) and rises at most by a quarter
  per window (no swing of cameras back and forth), never above `maximum` (`worker.capacity`) nor below 1.

`CapacityTracker` runs a meter on a thread: it samples the loop's busy seconds and the cameras held every
`sample_s`, and hands each new capacity to the lease keeper (`LeaseKeeper.set_capacity`), which publishes it
with the next heartbeat; the assignment then gives this worker no more than that.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

_MIN_COST = 1e-6  # a camera costs at least this share of the detector (no division by ~0 when all is still)
_RISE = 0.25  # the most the capacity grows per window, as a share of the current one


@dataclass(frozen=True, slots=True)
class CapacitySample:
    """One window's measurement."""

    load: float  # the larger of the detector's busy share and the process's CPU share over the window
    cameras: float  # mean cameras held over the window
    cost: float  # detector share one camera took
    capacity: int  # the capacity after the window


class CapacityMeter:
    def __init__(
        self,
        maximum: int,
        *,
        target_load: float = 0.75,
        window_s: float = 60.0,
        memory: int = 30,
        calibrated_cost: float | None = None,
        trust_after: int = 5,
    ) -> None:
        if maximum < 1:
            raise ValueError(f"maximum must be >= 1, not {maximum}")
        if not 0 < target_load <= 1:
            raise ValueError(f"target_load must be in (0, 1], not {target_load}")
        if window_s <= 0 or memory < 1:
            raise ValueError(f"window_s must be > 0 and memory >= 1, not {window_s} and {memory}")
        self.maximum = maximum
        self.target_load = target_load
        self.window_s = window_s
        self.costs: deque[float] = deque(maxlen=memory)  # measured, one per window
        self.calibrated_cost = max(calibrated_cost, _MIN_COST) if calibrated_cost is not None else None
        self.trust_after = trust_after
        self.windows = 0  # measured so far
        self.capacity = self._from_costs() if self.calibrated_cost is not None else maximum
        self._start: tuple[float, float] | None = None  # (time, busy seconds) at the window's start
        self._held_s = 0.0  # camera-seconds held in the window so far
        self._last: tuple[float, int] | None = None  # (time, cameras held) of the latest sample
        self._cpu_start = 0.0  # the process's CPU seconds at the window's start
        self.latest: CapacitySample | None = None

    @staticmethod
    def calibrated(
        seconds_per_frame: float, frames_per_s: float, activity: float = 1.0, refresh_s: float = 10.0
    ) -> float:
        """The share of the detector one camera takes: `frames_per_s` while something moves (`activity`
        of the time), one frame per `refresh_s` otherwise. `activity` 1: the worst case, every frame run."""
        if seconds_per_frame < 0 or frames_per_s < 0 or not 0 <= activity <= 1 or refresh_s <= 0:
            raise ValueError("seconds_per_frame, frames_per_s >= 0, activity in [0, 1], refresh_s > 0")
        return seconds_per_frame * (frames_per_s * activity + (1 - activity) / refresh_s)

    def sample(
        self, now: float, busy_s: float, held: int, cpu_s: float = 0.0, cores: float = 1.0
    ) -> CapacitySample | None:
        """Feed the loop's cumulative busy seconds, the cameras held now and, optionally, the process's
        cumulative CPU seconds and the cores it may use; at each full window, the window's measurement
        (and `capacity` updated), else None."""
        if self._start is None or self._last is None:
            self._start, self._last = (now, busy_s), (now, held)
            self._cpu_start = cpu_s
            return None
        last_at, last_held = self._last
        self._held_s += last_held * max(0.0, now - last_at)
        self._last = (now, held)
        started_at, busy_before = self._start
        span = now - started_at
        if span < self.window_s:
            return None
        cpu = max(0.0, cpu_s - self._cpu_start) / (span * max(cores, 1e-9))
        load = max(max(0.0, busy_s - busy_before) / span, cpu)
        cameras = self._held_s / span
        self._start, self._held_s, self._cpu_start = (now, busy_s), 0.0, cpu_s
        if cameras < 0.5:  # nothing held: nothing learned about the cost of a camera
            return None
        cost = max(load / cameras, _MIN_COST)
        self.costs.append(cost)
        self.windows += 1
        wanted = self._from_costs()
        if wanted > self.capacity:
            wanted = min(wanted, self.capacity + max(1, math.floor(self.capacity * _RISE)))
        self.capacity = wanted
        self.latest = CapacitySample(load, cameras, cost, wanted)
        return self.latest

    def peak_cost(self) -> float:
        """The cost the capacity is planned on: the highest measured in memory, and the calibration's
        until `trust_after` windows were measured."""
        costs = list(self.costs)
        if self.calibrated_cost is not None and self.windows < self.trust_after:
            costs.append(self.calibrated_cost)
        return max(costs) if costs else _MIN_COST

    def _from_costs(self) -> int:
        return max(1, min(self.maximum, math.floor(self.target_load / self.peak_cost())))


def available_cores() -> float:
    """The CPU cores this process may use: its CPU affinity, or less under a cgroup v2 quota (a container's
    CPU limit, `/sys/fs/cgroup/cpu.max`: "max 100000" or "150000 100000" for 1.5 cores)."""
    cores = (
        float(len(os.sched_getaffinity(0)))
        if hasattr(os, "sched_getaffinity")
        else float(os.cpu_count() or 1)
    )
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]  # noqa: SIM115
    except (OSError, ValueError):
        return cores
    if quota != "max" and float(period) > 0:
        cores = min(cores, float(quota) / float(period))
    return max(cores, 0.01)


class CapacityTracker:
    """`meter` on a daemon thread: samples `busy_s()` and `held()` every `sample_s`, and calls
    `set_capacity` whenever the measured capacity changes."""

    def __init__(
        self,
        meter: CapacityMeter,
        busy_s: Callable[[], float],
        held: Callable[[], int],
        set_capacity: Callable[[int], None],
        *,
        sample_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        cpu_s: Callable[[], float] = time.process_time,
        cores: Callable[[], float] = available_cores,
        name: str = "capacity",
        on_window: Callable[[CapacityMeter], None] | None = None,
    ) -> None:
        self.meter = meter
        self.on_window = on_window  # after each measured window (the runtime remembers the cost)
        self.cpu_s = cpu_s
        self.cores = cores()
        self.busy_s = busy_s
        self.held = held
        self.set_capacity = set_capacity
        self.sample_s = sample_s
        self.clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self.set_capacity(self.meter.capacity)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def step(self) -> CapacitySample | None:
        """One sample (the thread's body; tests call it with their own clock)."""
        before = self.meter.capacity
        measured = self.meter.sample(self.clock(), self.busy_s(), self.held(), self.cpu_s(), self.cores)
        if measured is not None and self.on_window is not None:
            self.on_window(self.meter)
        if measured is not None and measured.capacity != before:
            log.info(
                "capacity %d -> %d cameras: load %.0f %% (detector or CPU) over the last %.0f s with %.1f "
                "cameras (%.2f %% each, peak of recent windows %.2f %%; target %.0f %%)",
                before,
                measured.capacity,
                measured.load * 100,
                self.meter.window_s,
                measured.cameras,
                measured.cost * 100,
                self.meter.peak_cost() * 100,
                self.meter.target_load * 100,
            )
            self.set_capacity(measured.capacity)
        return measured

    def _run(self) -> None:
        while not self._stop.wait(self.sample_s):
            try:
                self.step()
            except Exception:
                log.exception("capacity measurement failed")
