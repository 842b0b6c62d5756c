"""The alert bus and the alert pipeline against real Redis, real SeaweedFS and SQLite."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import redis

from alerts.bus import AlertBus, BusMessage
from alerts.pipeline import AlertPipeline, CameraPlace
from alerts.rules import Rule, RuleEngine
from detect.detections import Detections
from gridwatch.services import RedisServer, S3Server
from ingest.clip import ClipResult
from ingest.frames import Frame
from ingest.source import ClipRequest
from storage.metadata import MetadataDB
from storage.objectstore import ObjectStore

NAMES = ("person", "fire")


@pytest.fixture()
def bus(redis_server: RedisServer) -> Iterator[AlertBus]:
    stream = f"test:alerts:{time.monotonic_ns()}"
    bus = AlertBus.from_url(redis_server.url, stream=stream, maxlen=1000)
    yield bus
    bus.client.delete(stream)
    bus.close()


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


def _frame(camera: str = "cam1", at: float | None = None) -> Frame:
    image = np.zeros((240, 320, 3), np.uint8)
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


@dataclass
class PipelineUnderTest:
    pipeline: AlertPipeline
    db: MetadataDB
    store: ObjectStore
    requests: list[tuple[str, ClipRequest]]


@pytest.fixture()
def under_test(
    bus: AlertBus, s3_server: S3Server, s3_keys: tuple[str, str], tmp_path: Path
) -> Iterator[PipelineUnderTest]:
    db = MetadataDB(f"sqlite:///{tmp_path / 'p.db'}")
    db.create_schema()
    store = ObjectStore(s3_server.endpoint, *s3_keys, bucket="pipeline-test")
    store.ensure_bucket()
    requests: list[tuple[str, ClipRequest]] = []
    pipeline = AlertPipeline(
        rules=RuleEngine([Rule("people", frozenset({"person"}), 0.5, cooldown_s=60)]),
        bus=bus,
        db=db,
        store=store,
        places={"cam1": CameraPlace("v1", "g1")},
        request_clip=lambda cam, req: requests.append((cam, req)),
        pre_roll_s=2,
        post_roll_s=3,
    )
    yield PipelineUnderTest(pipeline, db, store, requests)
    pipeline.close()
    db.close()


def test_pipeline_stores_publishes_and_uploads_clip(
    under_test: PipelineUnderTest, bus: AlertBus, tmp_path: Path
) -> None:
    pipeline, db, store, requests = under_test.pipeline, under_test.db, under_test.store, under_test.requests
    assert pipeline.handle(_frame(), _person(0.4)) == []  # below the rule's score
    assert pipeline.handle(_frame(), _person(0.9, 0)) == []  # the object is seen once only so far
    [alert_id] = pipeline.handle(_frame(), _person(0.9, 1))
    assert pipeline.handle(_frame(), _person(0.95, 2)) == []  # the same object does not alert again

    record = db.get_alert(alert_id)
    assert record is not None and record.label == "person" and record.grid == "g1"
    assert record.clip_status == "pending" and record.snapshot_key
    image = cv2.imdecode(np.frombuffer(store.get_bytes(record.snapshot_key), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (240, 320, 3)
    assert image[20:200, 70].any(), "the box is drawn on the snapshot"
    [(_, message)] = bus.read_all()
    assert message.kind == "alert" and message.alert_id == alert_id

    [(camera, request)] = requests
    assert camera == "cam1" and request.time_s == 4.0 and request.pre_roll_s == 2 and request.post_roll_s == 3
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypisom-not-really-a-clip")
    request.on_done(ClipResult(clip, 5.0, 50, clip.stat().st_size, "0" * 64, "h264"))
    pipeline.close()
    record = db.get_alert(alert_id)
    assert record is not None and record.clip_status == "stored" and record.clip_duration_s == 5.0
    assert record.clip_key is not None and store.get_bytes(record.clip_key).startswith(
        b"\x00\x00\x00\x18ftyp"
    )
    assert not clip.exists(), "the local clip is removed after a confirmed upload"
    assert [m.kind for _, m in bus.read_all()] == ["alert", "clip"]


def test_pipeline_keeps_the_alert_when_the_clip_fails(under_test: PipelineUnderTest) -> None:
    pipeline, db = under_test.pipeline, under_test.db
    pipeline.handle(_frame(), _person(0.9, 0))
    [alert_id] = pipeline.handle(_frame(), _person(0.9, 1))
    under_test.requests[0][1].on_done(ClipResult(None, 0, 0, 0, None, None, error="camera disconnected"))
    pipeline.close()
    record = db.get_alert(alert_id)
    assert (
        record is not None and record.clip_status == "failed" and record.clip_error == "camera disconnected"
    )


def test_an_alert_event_ends_when_its_object_leaves(under_test: PipelineUnderTest, bus: AlertBus) -> None:
    pipeline = under_test.pipeline
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
