"""The camera cost remembered in Redis: a worker starting on a machine like one that measured begins from
that measurement instead of the calibration's guess; a different machine, an old or a broken entry does
not count."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pytest
import redis

from gridwatch.cluster import ClusterKeys
from gridwatch.cluster.capacity import CapacityMeter, CapacityTracker
from gridwatch.cluster.cost_memory import CostMemory, machine_signature
from gridwatch.runtime import Runtime
from gridwatch.settings import Settings
from storage.metadata import MetadataDB


def test_a_cost_is_recalled_under_its_signature_only_while_fresh(
    client: redis.Redis, keys: ClusterKeys, caplog: pytest.LogCaptureFixture
) -> None:
    memory = CostMemory(client, keys)
    here = machine_signature(2.0, ["yolo"], 2.0, cpu="Xeon")
    assert memory.recall(here) is None
    memory.remember(here, 0.05, "w1", 7)
    found = memory.recall(here)
    assert found is not None and (found.cost, found.worker_id, found.windows) == (0.05, "w1", 7)
    assert memory.recall(here, max_age_s=-1) is None  # too old
    for other in (
        machine_signature(4.0, ["yolo"], 2.0, cpu="Xeon"),
        machine_signature(2.0, ["yolo", "fire"], 2.0, cpu="Xeon"),
        machine_signature(2.0, ["yolo"], 5.0, cpu="Xeon"),
        machine_signature(2.0, ["yolo"], 2.0, cpu="EPYC"),
    ):
        assert other != here and memory.recall(other) is None
    client.hset(keys.costs, here, "{not json")
    assert memory.recall(here) is None and "ignoring the remembered camera cost" in caplog.text
    client.hset(keys.costs, here, json.dumps({"cost": 0, "worker": "w", "at": time.time(), "windows": 1}))
    assert memory.recall(here) is None  # a cost of nothing is not a measurement


class _Loop:
    """What the runtime asks of the detector loop here: the models' time for one frame (0.1 s)."""

    def __init__(self) -> None:
        self.timed = 0

    def seconds_per_frame(self, image: Any) -> float:
        assert isinstance(image, np.ndarray) and image.shape == (720, 1280, 3)
        self.timed += 1
        return 0.1


def test_a_worker_starts_from_what_a_worker_like_it_measured(
    client: redis.Redis, keys: ClusterKeys, tmp_path: Any
) -> None:
    db = MetadataDB(f"sqlite:///{tmp_path / 'gw.db'}")
    db.migrate()
    settings = Settings.model_validate({"worker": {"capacity": 64, "target_load": 0.75}})
    memory = CostMemory(client, keys)

    first_loop = _Loop()
    first = Runtime(settings, mode="worker", db=db, loop=first_loop, worker_id="w-first")  # type: ignore[arg-type]
    meter = first._capacity_meter(memory)
    # the calibration: 0.1 s x (2 frames/s x 25 % + 75 % / 10 s) = 5.75 % a camera -> 13 cameras
    assert first_loop.timed == 1 and meter.capacity == 13

    # it measures 4 % a camera; before trust_after windows nothing is remembered, then the peak is
    measured = CapacityMeter(64, target_load=0.75, window_s=1.0, calibrated_cost=meter.calibrated_cost)
    now, busy = 0.0, 0.0
    remembered: list[int] = []
    tracker = CapacityTracker(
        measured, lambda: busy, lambda: 10, lambda _c: None, clock=lambda: now, cpu_s=lambda: 0.0,
        cores=lambda: 2.0,
        on_window=lambda m: (first._remember_cost(memory, first._machine_signature, m),
                             remembered.append(m.windows)),
    )  # fmt: skip
    tracker.step()
    for _ in range(measured.trust_after):
        if measured.windows == measured.trust_after - 1:
            assert memory.recall(first._machine_signature) is None
        now, busy = now + 1.0, busy + 0.4  # 40 % busy with 10 cameras
        tracker.step()
    assert remembered == [1, 2, 3, 4, 5]
    found = memory.recall(first._machine_signature)
    assert found is not None and found.cost == pytest.approx(0.04) and found.worker_id == "w-first"

    second_loop = _Loop()
    second = Runtime(settings, mode="worker", db=db, loop=second_loop, worker_id="w-second")  # type: ignore[arg-type]
    started = second._capacity_meter(memory)
    assert second_loop.timed == 0  # no timing, no guess: the measurement
    assert started.capacity == 18  # 0.75 / 0.04
    db.close()
