"""An alert reaches the stream once, in a real Redis: publishing it again (an outbox drained twice, a batch,
the worker that took its camera over) adds nothing; and what a worker killed between an alert's row and its
publication left unpublished is published by the next owner of the camera, and only that."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alerts.bus import PUBLISHED_TTL_S, AlertBus, BusMessage, published_marker
from alerts.outbox import OutboxPublisher
from alerts.pipeline import AlertPipeline, alert_message
from storage.metadata import AlertRecord, MetadataDB


def _message(alert_id: str, kind: str = "alert", sequence: int | None = None) -> BusMessage:
    return BusMessage(alert_id, kind, "cam1", "v1", "g1", "person", 0.9, "2026-12-02T08:00:00+00:00",
                      sequence=sequence)  # fmt: skip


def test_an_alert_is_added_to_the_stream_once(bus: AlertBus, tmp_path: Path) -> None:
    first = bus.publish(_message("a1"))
    assert first and bus.publish(_message("a1")) == ""  # again: nothing added
    assert 0 < bus.client.ttl(published_marker(bus.stream, "a1")) <= PUBLISHED_TTL_S
    # other kinds are not alerts: each publication is an entry (consumers dedupe them by their key)
    bus.publish(_message("a1", "clip", 0))
    bus.publish(_message("a1", "clip", 0))
    outbox = OutboxPublisher(bus, tmp_path / "outbox.db")
    try:
        outbox.publish(_message("a1"))  # straight to Redis: refused as a repeat
        outbox.publish(_message("a2"))
        outbox._xadd([_message("a2").fields(), _message("a3").fields(), _message("a3").fields()])  # a batch
    finally:
        outbox.close()
    kinds = [(m.alert_id, m.kind) for _, m in bus.read_all()]
    assert kinds == [("a1", "alert"), ("a1", "clip"), ("a1", "clip"), ("a2", "alert"), ("a3", "alert")]
    assert bus.published(["a1", "a2", "a3", "a4"]) == {"a1", "a2", "a3"}


def _alert(alert_id: str, camera_id: str, at: datetime) -> AlertRecord:
    snapshot = f"snapshots/{alert_id}.jpg"
    return AlertRecord(alert_id, camera_id, "v1", "g1", "person", 0.8, (1, 2, 30, 40), at, at,
                       severity="normal", rule="people", snapshot_key=snapshot)  # fmt: skip


def test_the_next_owner_publishes_what_a_dead_worker_left_unpublished(
    make_pipeline: Callable[..., AlertPipeline], pipeline_db: MetadataDB, bus: AlertBus
) -> None:
    now = datetime.now(UTC)
    pipeline_db.add_alert(_alert("published", "cam1", now - timedelta(seconds=30)))
    bus.publish(alert_message(pipeline_db.get_alert("published")))  # type: ignore[arg-type]
    pipeline_db.add_alert(_alert("orphan-1", "cam1", now - timedelta(seconds=20)))  # its worker died here
    pipeline_db.add_alert(_alert("orphan-2", "cam1", now - timedelta(seconds=10)))
    pipeline_db.add_alert(_alert("old", "cam1", now - timedelta(hours=2)))  # outside the window
    pipeline_db.add_alert(_alert("elsewhere", "cam9", now - timedelta(seconds=5)))  # another camera
    dispatched = _alert("dispatched", "cam1", now - timedelta(seconds=15))
    pipeline_db.add_alert(dispatched)
    pipeline_db.attach_alert_to_incident(
        alert_id="dispatched", camera_id="cam1", village="v1", grid="g1", group="people", label="person",
        severity="normal", at=dispatched.created_at, window_s=300, team=None,
    )  # fmt: skip
    pipeline = make_pipeline()
    assert pipeline.republish_unpublished(["cam1"], now) == ["orphan-2", "orphan-1"]
    entries = [m for _, m in bus.read_all()]
    assert [m.alert_id for m in entries] == ["published", "orphan-1", "orphan-2"]  # oldest first
    republished = entries[1]
    assert republished == alert_message(pipeline_db.get_alert("orphan-1"))  # type: ignore[arg-type]
    assert (republished.snapshot_key, republished.severity, republished.bbox) == (
        "snapshots/orphan-1.jpg", "normal", (1.0, 2.0, 30.0, 40.0),
    )  # fmt: skip
    assert pipeline.republish_unpublished(["cam1"], now) == []  # twice: nothing more
    assert len(bus.read_all()) == 3


def test_an_alert_under_a_stale_lease_is_not_raised(
    make_pipeline: Callable[..., AlertPipeline], pipeline_db: MetadataDB, bus: AlertBus
) -> None:
    """The pipeline of a worker whose lease token is lower than one the database has seen: the trigger
    writes nothing, publishes nothing and counts as fenced out; under the current token the alert is
    written with its worker and token."""
    import time

    import numpy as np

    from detect.detections import Detections
    from ingest.frames import Frame
    from storage.metadata import Fence

    def frame() -> Frame:
        time.sleep(0.01)
        return Frame("cam1", np.zeros((240, 320, 3), np.uint8), time_s=4.0, captured_at=time.time(),
                     connection=1, seq=1)  # fmt: skip

    def person(step: int) -> Detections:
        x = 10 + 60 * step
        return Detections(np.array([[x, 20, x + 50, 200]], np.float32), np.array([0.9], np.float32),
                          np.array([0], np.int32), ("person",))  # fmt: skip

    pipeline_db.claim_fence(Fence("cam1", "w2", 8))  # w2 took the camera over
    pipeline = make_pipeline()
    pipeline.fence = lambda camera: Fence(camera, "w1", 7)  # w1 still believes it holds it
    assert pipeline.handle(frame(), person(0)) == []
    assert pipeline.handle(frame(), person(1)) == []  # the trigger: refused by the database
    assert pipeline.fenced_out == 1 and pipeline_db.list_alerts() == [] and bus.read_all() == []
    again = make_pipeline()  # w1 took the camera back under a new lease and started it again
    again.fence = lambda camera: Fence(camera, "w1", 9)
    assert again.handle(frame(), person(0)) == []
    [alert_id] = again.handle(frame(), person(1))
    stored = pipeline_db.get_alert(alert_id)
    assert stored is not None and (stored.worker_id, stored.fence_token) == ("w1", 9)
    assert [m.alert_id for _, m in bus.read_all()] == [alert_id]
