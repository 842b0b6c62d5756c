"""The alert bus and the alert pipeline against real Redis, real SeaweedFS (through the spool) and SQLite:
alerts, their snapshots and clips, the end of an event, the memory cap on the best frames of open events,
and uploads confirmed after their alert was deleted."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import redis

from alerts.bus import AlertBus, BusMessage
from alerts.pipeline import AlertPipeline, CameraPlace
from detect.detections import Detections
from gridwatch.metrics import RuntimeCollector, make_registry, render
from gridwatch.services import RedisServer
from ingest.clip import ClipResult
from ingest.frames import Frame
from ingest.source import ClipRequest
from storage.metadata import MetadataDB
from storage.objectstore import ObjectStore
from storage.spool import Spool

NAMES = ("person", "fire")
FRAME_BYTES = 240 * 320 * 3

Make = Callable[..., AlertPipeline]
Requests = list[tuple[str, ClipRequest]]
Settle = Callable[[AlertPipeline], None]


def test_bus_round_trip(bus: AlertBus) -> None:
    message = BusMessage(
        alert_id="a" * 32,
        kind="alert",
        camera_id="cam",
        village="v",
        grid="g",
        label="person",
        score=0.87654,
        created_at="2026-11-28T08:00:00+00:00",
        snapshot_key="snapshots/x.jpg",
        bbox=(1.0, 2.0, 3.5, 4.25),
    )
    entry = bus.publish(message)
    [(entry_id, back)] = bus.read_all()
    assert entry_id == entry
    assert back.alert_id == message.alert_id and back.label == "person" and back.bbox == (1.0, 2.0, 3.5, 4.25)
    assert back.score == pytest.approx(0.8765)
    assert back.clip_key is None


def test_bus_publish_to_dead_server_raises(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "r", binary="redis-server").start()
    bus = AlertBus.from_url(server.url)
    server.kill()
    with pytest.raises(redis.exceptions.ConnectionError):
        bus.publish(BusMessage("b" * 32, "alert", "c", "v", "g", "fire", 0.9, "2026-01-01T00:00:00+00:00"))


def _frame(camera: str = "cam1", at: float | None = None, shade: int = 0) -> Frame:
    image = np.full((240, 320, 3), shade, np.uint8)
    if at is None:
        time.sleep(0.01)  # each frame a little later, as from a camera
        at = time.time()
    return Frame(camera, image, time_s=4.0, captured_at=at, connection=1, seq=1)


def _person(score: float, step: int = 0) -> Detections:
    """A person walking right, 60 px per detector run (alerts need an object that travelled)."""
    x = 10 + 60 * step
    return Detections(
        np.array([[x, 20, x + 50, 200]], np.float32),
        np.array([score], np.float32),
        np.array([0], np.int32),
        NAMES,
    )


def _image(store: ObjectStore, key: str) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(store.get_bytes(key), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, f"{key} does not decode"
    return image


def _shade(store: ObjectStore, key: str) -> float:
    """The background grey of a stored image (the boxes drawn on it are a small part)."""
    return float(np.median(_image(store, key)))


def _fake_clip(path: Path) -> ClipResult:
    path.write_bytes(b"\x00\x00\x00\x18ftypisom-not-really-a-clip")
    return ClipResult(path, 5.0, 50, path.stat().st_size, "0" * 64, "h264")


def test_pipeline_spools_snapshot_and_clip_and_publishes(
    make_pipeline: Make,
    pipeline_db: MetadataDB,
    store: ObjectStore,
    spool: Spool,
    bus: AlertBus,
    clip_requests: Requests,
    settle: Settle,
    tmp_path: Path,
) -> None:
    pipeline = make_pipeline()
    assert pipeline.handle(_frame(), _person(0.4)) == []  # below the rule's score
    assert pipeline.handle(_frame(), _person(0.9, 0)) == []  # the object is seen once only so far
    [alert_id] = pipeline.handle(_frame(), _person(0.9, 1))
    assert pipeline.handle(_frame(), _person(0.95, 2)) == []  # the same object does not alert again
    [(_, message)] = bus.read_all()
    assert message.kind == "alert" and message.alert_id == alert_id
    assert message.snapshot_key, "the alert goes out at once with its snapshot's key"

    assert spool.flush(30)
    record = pipeline_db.get_alert(alert_id)
    assert record is not None and record.label == "person" and record.grid == "g1"
    assert record.clip_status == "pending" and record.snapshot_key == message.snapshot_key
    assert record.snapshot_bytes == len(store.get_bytes(record.snapshot_key)), "recorded once uploaded"
    assert record.thumbnail_key is not None and store.exists(record.thumbnail_key)
    image = _image(store, record.snapshot_key)
    assert image.shape == (240, 320, 3)
    assert image[20:200, 70].any(), "the box is drawn on the snapshot"

    [(camera, request)] = clip_requests
    assert camera == "cam1" and request.time_s == 4.0 and request.pre_roll_s == 2 and request.post_roll_s == 3
    clip = tmp_path / "clip.mp4"
    request.on_done(_fake_clip(clip))
    settle(pipeline)
    record = pipeline_db.get_alert(alert_id)
    assert record is not None and record.clip_status == "stored" and record.clip_duration_s == 5.0
    assert record.clip_key is not None and store.get_bytes(record.clip_key).startswith(
        b"\x00\x00\x00\x18ftyp"
    )
    assert [(c.object_key, c.status) for c in pipeline_db.list_clips(alert_id)] == [
        (record.clip_key, "stored")
    ]
    assert not clip.exists(), "the clip file is removed once spooled"
    assert spool.pending() == [] and spool.stats.uploads == 3  # snapshot, thumbnail, clip
    assert [m.kind for _, m in bus.read_all()] == ["alert", "clip"]


def test_pipeline_keeps_the_alert_when_the_clip_fails(
    make_pipeline: Make, pipeline_db: MetadataDB, clip_requests: Requests, settle: Settle
) -> None:
    pipeline = make_pipeline()
    pipeline.handle(_frame(), _person(0.9, 0))
    [alert_id] = pipeline.handle(_frame(), _person(0.9, 1))
    clip_requests[0][1].on_done(ClipResult(None, 0, 0, 0, None, None, error="camera disconnected"))
    settle(pipeline)
    record = pipeline_db.get_alert(alert_id)
    assert (
        record is not None and record.clip_status == "failed" and record.clip_error == "camera disconnected"
    )
    assert record.snapshot_key is not None  # the snapshot went up all the same


def test_an_alert_event_ends_when_its_object_leaves(make_pipeline: Make, bus: AlertBus) -> None:
    pipeline = make_pipeline()
    start = time.time()  # detector runs 0.5 s apart, as at detect_fps 2 (the tracker predicts from them)
    pipeline.handle(_frame(at=start), _person(0.8, 0))
    [alert_id] = pipeline.handle(_frame(at=start + 0.5), _person(0.8, 1))
    pipeline.handle(_frame(at=start + 1.0), _person(0.97, 2))  # the best sighting comes after the alert
    nobody = Detections.empty(NAMES)
    late = Frame("cam1", np.zeros((240, 320, 3), np.uint8), 20.0, start + 30, connection=1, seq=9)
    assert pipeline.handle(late, nobody) == []  # 30 s later: the track has ended
    kinds = [(m.kind, m.alert_id) for _, m in bus.read_all()]
    assert kinds == [("alert", alert_id), ("ended", alert_id)]
    ended = bus.read_all()[-1][1]
    assert ended.best_score == pytest.approx(0.97) and ended.duration_s is not None and ended.duration_s > 0
    assert ended.ended_at is not None and ended.frame_time is None
    assert bus.read_all()[0][1].frame_time is not None  # the alert says when its frame was received
    assert pipeline.events == {}


# -- the memory cap on best frames -----------------------------------------------------------------------


def _held(pipeline: AlertPipeline) -> int:
    """Bytes of best frames the open events hold."""
    return sum(
        event.best_image.nbytes
        for events in pipeline.events.values()
        for event in events
        if event.best_image is not None
    )


def _wait_for(condition: Callable[[], bool], failure: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.02)


def _holds_best_frame(pipeline: AlertPipeline, camera: str) -> bool:
    [event] = [e for (cam, _), events in pipeline.events.items() if cam == camera for e in events]
    return event.best_image is not None


class _Cameras:
    """Cameras with a person walking in each, one detector run 0.5 s apart per camera; the cap is checked
    after every run."""

    def __init__(self, pipeline: AlertPipeline, cap: int) -> None:
        self.pipeline, self.cap = pipeline, cap
        self.start = time.time()
        self.steps: dict[str, int] = {}
        self.alerts: dict[str, str] = {}

    def see(self, camera: str, score: float, shade: int) -> None:
        step = self.steps.get(camera, 0)
        self.steps[camera] = step + 1
        frame = _frame(camera, self.start + 0.5 * step, shade)
        for alert_id in self.pipeline.handle(frame, _person(score, step)):
            self.alerts[camera] = alert_id
        assert _held(self.pipeline) <= self.cap, "the best frames of open events went over the cap"

    def arrive(self, camera: str, best: float, shade: int) -> None:
        """Alert on a dark frame (score 0.8), then a better sighting (`best`) on a frame of `shade`."""
        self.see(camera, 0.8, 30)
        self.see(camera, 0.8, 30)
        assert camera in self.alerts
        self.see(camera, best, shade)

    def leave(self, camera: str) -> None:
        late = Frame(camera, np.zeros((240, 320, 3), np.uint8), 40.0, self.start + 30, connection=1, seq=99)
        assert self.pipeline.handle(late, Detections.empty(NAMES)) == []


def test_best_frames_of_open_events_stay_within_the_memory_cap(
    make_pipeline: Make,
    pipeline_db: MetadataDB,
    store: ObjectStore,
    spool: Spool,
    settle: Settle,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cap = 2 * FRAME_BYTES + 1000  # two best frames fit, three do not
    places = {f"cam{i}": CameraPlace("v1", "g1") for i in (1, 2, 3)}
    pipeline = make_pipeline(places=places, best_frame_memory_bytes=cap)
    cameras = _Cameras(pipeline, cap)
    with caplog.at_level(logging.INFO, logger="alerts.pipeline"):
        cameras.arrive("cam1", 0.9, 150)
        cameras.arrive("cam2", 0.9, 110)
        assert pipeline.best_frames_flushed == 0 and _held(pipeline) == 2 * FRAME_BYTES
        cameras.arrive("cam3", 0.9, 190)  # a third best frame: cam1's, the oldest, is written out now
        assert pipeline.best_frames_flushed == 1
        assert not _holds_best_frame(pipeline, "cam1")
        assert _holds_best_frame(pipeline, "cam2") and _holds_best_frame(pipeline, "cam3")
        assert len(pipeline.events) == 3, "the events go on"
        _wait_for(lambda: spool.stats.uploads == 6 + 2, "cam1's early replacement is not uploaded")
        snapshots: dict[str, str] = {}
        for camera, alert_id in cameras.alerts.items():
            record = pipeline_db.get_alert(alert_id)
            assert record is not None and record.snapshot_key is not None
            snapshots[camera] = record.snapshot_key
        assert _shade(store, snapshots["cam1"]) == pytest.approx(150, abs=10), "replaced early"
        assert _shade(store, snapshots["cam2"]) == pytest.approx(30, abs=10), "the alert frame, still"

        cameras.see("cam1", 0.95, 240)  # cam1 keeps a better frame again: now cam2's is the oldest
        assert pipeline.best_frames_flushed == 2
        assert _holds_best_frame(pipeline, "cam1") and not _holds_best_frame(pipeline, "cam2")
        for camera in cameras.alerts:
            cameras.leave(camera)
        assert pipeline.events == {} and _held(pipeline) == 0
        settle(pipeline)

    expected = {"cam1": 240, "cam2": 110, "cam3": 190}  # the best frame of each event
    for camera, shade in expected.items():
        record = pipeline_db.get_alert(cameras.alerts[camera])
        assert record is not None and record.snapshot_key == snapshots[camera] and record.thumbnail_key
        assert _shade(store, record.snapshot_key) == pytest.approx(shade, abs=10), camera
        assert _shade(store, record.thumbnail_key) == pytest.approx(shade, abs=10), camera
        assert record.snapshot_bytes == len(store.get_bytes(record.snapshot_key))
    # 3 alerts' snapshot + thumbnail; replaced: cam1 early and at its end, cam2 early, cam3 at its end
    assert spool.stats.uploads == 6 + 2 * 4
    flushed = [r for r in caplog.records if "written out before the event's end" in r.getMessage()]
    assert [r.levelno for r in flushed] == [logging.INFO] * 2
    assert [r.getMessage().split()[1].rstrip(":") for r in flushed] == [
        cameras.alerts["cam1"],
        cameras.alerts["cam2"],
    ]
    collector = RuntimeCollector(
        {},
        {},
        loop=lambda: None,
        alerts_by_label=dict,
        best_frames_flushed=lambda: pipeline.best_frames_flushed,
    )
    assert b"gridwatch_best_frames_flushed_total 2.0" in render(make_registry(collector))


def test_a_best_frame_over_the_cap_by_itself_is_written_out_at_once(
    make_pipeline: Make, pipeline_db: MetadataDB, store: ObjectStore, spool: Spool, settle: Settle
) -> None:
    pipeline = make_pipeline(best_frame_memory_bytes=FRAME_BYTES // 2)
    cameras = _Cameras(pipeline, FRAME_BYTES // 2)
    cameras.arrive("cam1", 0.9, 200)
    assert pipeline.best_frames_flushed == 1 and _held(pipeline) == 0
    cameras.leave("cam1")
    settle(pipeline)
    record = pipeline_db.get_alert(cameras.alerts["cam1"])
    assert record is not None and record.snapshot_key is not None
    assert _shade(store, record.snapshot_key) == pytest.approx(200, abs=10)
    assert spool.stats.uploads == 4  # the alert's images, then the best frame's, once (not again at the end)


def test_no_cap_keeps_every_best_frame_until_its_event_ends(make_pipeline: Make) -> None:
    places = {f"cam{i}": CameraPlace("v1", "g1") for i in (1, 2, 3)}
    pipeline = make_pipeline(places=places, best_frame_memory_bytes=0)
    cameras = _Cameras(pipeline, 3 * FRAME_BYTES)
    for i, camera in enumerate(places):
        cameras.arrive(camera, 0.9, 100 + 40 * i)
    assert pipeline.best_frames_flushed == 0 and _held(pipeline) == 3 * FRAME_BYTES


# -- an upload that lands after its alert was deleted -----------------------------------------------------


def test_an_upload_confirmed_after_its_alert_was_deleted_is_deleted_again(
    make_pipeline: Make,
    pipeline_db: MetadataDB,
    store: ObjectStore,
    spool: Spool,
    bus: AlertBus,
    clip_requests: Requests,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    places = {"cam1": CameraPlace("v1", "g1"), "cam2": CameraPlace("v1", "g1")}
    pipeline = make_pipeline(start_spool=False, places=places)  # as while the store is unreachable
    start = time.time()
    for step in range(2):
        for camera in places:
            pipeline.handle(_frame(camera, start + 0.5 * step), _person(0.9, step))
    gone, kept = (m.alert_id for _, m in bus.read_all())
    for camera, request in clip_requests:
        request.on_done(_fake_clip(tmp_path / f"{camera}.mp4"))
    pipeline.close()  # both alerts' snapshot, thumbnail and clip wait in the spool
    assert sorted(item.alert_id for item in spool.pending()) == sorted([gone] * 3 + [kept] * 3)
    gone_keys = [item.key for item in spool.pending() if item.alert_id == gone]
    assert pipeline_db.delete_alert(gone) is not None  # retention got there first (the race it guards)

    with caplog.at_level(logging.WARNING, logger="alerts.pipeline"):
        spool.start(pipeline.on_spool_stored, pipeline.on_spool_evicted, pipeline.on_spool_failed)
        assert spool.flush(30)
    assert spool.stats.uploads == 6 and spool.stats.permanent_failures == 0  # all of them went up
    assert [store.exists(key) for key in gone_keys] == [False, False, False], "no orphan is left"
    record = pipeline_db.get_alert(kept)
    assert record is not None and record.clip_status == "stored"
    for key in (record.snapshot_key, record.thumbnail_key, record.clip_key):
        assert key is not None and store.exists(key), "the other alert keeps its evidence"
    deleted = [r.getMessage() for r in caplog.records if "deleted from the store again" in r.getMessage()]
    assert len(deleted) == 3 and all(gone in line for line in deleted)
    assert [m.alert_id for _, m in bus.read_all() if m.kind == "clip"] == [kept]
