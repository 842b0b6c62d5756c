"""`/metrics`' families: everything the operators' dashboards need is there (per-camera fps and state,
detector latency, queue depths, alerts by label, delivery failures), per-camera detector intake from the
frame slots, and the dispatchers' backlog on a real Redis stream (lag and pending)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from alerts.bus import AlertBus, BusMessage
from alerts.dispatch_loop import DispatchLoop
from detect.loop import LoopStats
from gridwatch.alert_metrics import AlertSideCollector
from gridwatch.dispatch import build_dispatch_loop, build_dispatcher
from gridwatch.metrics import RuntimeCollector, make_registry, render
from gridwatch.services import RedisServer
from gridwatch.settings import Settings
from ingest.frames import Frame, FrameSlot
from storage.metadata import MetadataDB
from storage.spool import SpoolStats


def _samples(collector: Any, *more: Any) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Family name -> its samples' (labels, value), from the rendered Prometheus text."""
    registry = make_registry(collector)
    for extra in more:
        registry.register(extra)
    families = text_string_to_metric_families(render(registry).decode())
    return {f.name: [(s.labels, s.value) for s in f.samples] for f in families}


def _frame(camera: str, seq: int) -> Frame:
    return Frame(camera, np.zeros((2, 2, 3), np.uint8), seq / 10, 0.0, 1, seq)


@pytest.fixture
def dispatch(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[AlertBus, DispatchLoop]]:
    """A dispatch loop over a real Redis stream, not started: the test plays the dispatcher's reads."""
    settings = Settings.model_validate({})
    db = MetadataDB(f"sqlite:///{tmp_path / 'gw.db'}")
    db.migrate()
    bus = AlertBus.from_url(redis_server.url, f"test:metrics:{tmp_path.name}")
    worker = build_dispatcher(settings, db, bus.client)
    yield bus, build_dispatch_loop(settings, bus, worker)
    worker.close()
    bus.close()
    db.close()


def test_the_required_families_are_all_there(dispatch: tuple[AlertBus, DispatchLoop]) -> None:
    _bus, loop = dispatch
    stats = LoopStats(frames=10, last_latency_s=0.12)
    stats.latencies_s.extend([0.1, 0.12, 0.3])
    slot = FrameSlot()
    collector = RuntimeCollector(
        {},
        {"cam1": slot},
        loop=lambda: SimpleNamespace(stats=stats),  # type: ignore[arg-type,return-value]
        alerts_by_label=lambda: {"fire": 2, "person": 5},
        spool=lambda: SpoolStats(items=3, bytes=3000),
    )
    loop.dispatcher.deliveries_by_channel[("ops", "failed")] += 1
    outbox = SimpleNamespace(depth=4, queued=4, dropped=0)
    families = _samples(collector, AlertSideCollector(lambda: loop, lambda: outbox))  # type: ignore[arg-type,return-value]
    required = {
        "gridwatch_camera_input_fps",  # per camera and stream (samples once a camera runs)
        "gridwatch_camera_decoded_fps",
        "gridwatch_camera_state",
        "gridwatch_frames_taken",  # per camera: its rate is the detect fps
        "gridwatch_detector_latency_seconds",
        "gridwatch_detector_latency_quantile_seconds",
        "gridwatch_frames_dropped",  # queue depths: the latest-frame slots, the spool, the outbox, the stream
        "gridwatch_spool_items",
        "gridwatch_outbox_depth",
        "gridwatch_alerts",
        "gridwatch_deliveries",
        "gridwatch_dispatcher_entries",
        "gridwatch_dispatcher_dead_lettered",
    }
    assert required <= set(families), required - set(families)
    assert families["gridwatch_alerts"] == [({"label": "fire"}, 2.0), ({"label": "person"}, 5.0)]
    assert ({"notifier": "ops", "result": "failed"}, 1.0) in families["gridwatch_deliveries"]
    assert families["gridwatch_detector_latency_seconds"] == [({}, 0.12)]
    assert families["gridwatch_spool_items"] == [({}, 3.0)] and families["gridwatch_outbox_depth"] == [
        ({}, 4.0)
    ]


def test_frames_taken_count_per_camera_what_the_detector_took() -> None:
    slots = {"cam1": FrameSlot(), "cam2": FrameSlot()}
    for seq in range(3):
        slots["cam1"].put(_frame("cam1", seq))
        assert slots["cam1"].take() is not None
    slots["cam2"].put(_frame("cam2", 0))
    slots["cam2"].put(_frame("cam2", 1))  # replaced before it was taken: dropped
    assert slots["cam2"].take() is not None
    families = _samples(RuntimeCollector({}, slots, loop=lambda: None, alerts_by_label=dict))
    assert families["gridwatch_frames_taken"] == [({"camera": "cam1"}, 3.0), ({"camera": "cam2"}, 1.0)]
    assert families["gridwatch_frames_dropped"] == [({"camera": "cam1"}, 0.0), ({"camera": "cam2"}, 1.0)]


def test_the_dispatchers_backlog_on_the_alert_stream(
    dispatch: tuple[AlertBus, DispatchLoop], redis_server: RedisServer
) -> None:
    bus, loop = dispatch
    collector = AlertSideCollector(lambda: loop, lambda: None)
    families = _samples(RuntimeCollector({}, {}, loop=lambda: None, alerts_by_label=dict), collector)
    assert "gridwatch_dispatcher_pending" not in families  # no stream, no group yet: nothing to say
    loop.consumer.ensure_group()
    for i in range(5):
        bus.publish(
            BusMessage(f"{i:032x}", "alert", "cam1", "v1", "g1", "fire", 0.9, "2026-01-01T00:00:00+00:00")
        )
    assert len(loop.consumer.read(count=2, block_ms=0)) == 2  # read, not acked: pending
    families = _samples(RuntimeCollector({}, {}, loop=lambda: None, alerts_by_label=dict), collector)
    assert families["gridwatch_dispatcher_pending"] == [({}, 2.0)]
    assert families["gridwatch_dispatcher_lag"] == [({}, 3.0)]
    redis_server.stop()
    try:  # Redis down: the backlog is unknown, the rest is still served
        families = _samples(RuntimeCollector({}, {}, loop=lambda: None, alerts_by_label=dict), collector)
        assert "gridwatch_dispatcher_pending" not in families and "gridwatch_deliveries" in families
    finally:
        redis_server.start()
