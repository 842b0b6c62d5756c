"""An alert's evidence over its whole event, through the spool, against real Redis, SeaweedFS and SQLite:
the clip is extended while the object is seen, every clip file gets a clips row (pending until the spool
confirms, then stored, with the sha256 of the object), continuation clips get their own keys and bus
messages, and at the end of the event a better-scoring frame replaces the snapshot and the thumbnail."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from alerts.bus import AlertBus
from alerts.pipeline import AlertPipeline, CameraPlace
from alerts.rules import Rule, RuleEngine
from detect.detections import Detections
from gridwatch.services import RedisServer, S3Server
from ingest.clip import ClipResult
from ingest.frames import Frame
from ingest.source import ClipRequest
from storage.metadata import MetadataDB
from storage.objectstore import ObjectStore
from storage.spool import Spool

NAMES = ("person",)
WIDTH, HEIGHT = 640, 480


@pytest.fixture()
def bus(redis_server: RedisServer) -> Iterator[AlertBus]:
    stream = f"test:evidence:{time.monotonic_ns()}"
    bus = AlertBus.from_url(redis_server.url, stream=stream, maxlen=1000)
    yield bus
    bus.client.delete(stream)
    bus.close()


@dataclass
class Setup:
    pipeline: AlertPipeline
    db: MetadataDB
    store: ObjectStore
    spool: Spool
    bus: AlertBus
    requests: list[tuple[str, ClipRequest]]

    def start_spool(self) -> None:
        self.spool.start(
            self.pipeline.on_spool_stored, self.pipeline.on_spool_evicted, self.pipeline.on_spool_failed
        )

    def flush(self) -> None:
        self.pipeline.close()  # the upload threads have handed everything to the spool
        assert self.spool.flush(30), "the spool did not upload everything"


@pytest.fixture()
def setup(bus: AlertBus, s3_server: S3Server, s3_keys: tuple[str, str], tmp_path: Path) -> Iterator[Setup]:
    db = MetadataDB(f"sqlite:///{tmp_path / 'evidence.db'}")
    db.create_schema()
    store = ObjectStore(s3_server.endpoint, *s3_keys, bucket="evidence-test")
    store.ensure_bucket()
    spool = Spool(store, tmp_path / "spool", 100 * 1024 * 1024, retry_initial_s=0.2)
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
        spool=spool,
        max_clip_s=6,
        thumbnail_width=320,
    )
    yield Setup(pipeline, db, store, spool, bus, requests)
    pipeline.close()
    spool.stop(grace_s=1)
    db.close()


def _frame(at: float, time_s: float, brightness: int) -> Frame:
    image = np.full((HEIGHT, WIDTH, 3), brightness, np.uint8)
    return Frame("cam1", image, time_s=time_s, captured_at=at, connection=1, seq=int(time_s * 10))


def _person(score: float, step: int) -> Detections:
    x = 10 + 60 * step
    return Detections(
        np.array([[x, 20, x + 80, 300]], np.float32),
        np.array([score], np.float32),
        np.array([0], np.int32),
        NAMES,
    )


def _walk(setup: Setup, scores: list[float], brightness: Callable[[int], int]) -> tuple[str, float]:
    """A person seen every 0.5 s with these scores (alerting once it has travelled); the alert id, start."""
    start = time.time()
    raised: list[str] = []
    for i, score in enumerate(scores):
        raised += setup.pipeline.handle(
            _frame(start + 0.5 * i, 10.0 + 0.5 * i, brightness(i)), _person(score, i)
        )
    [alert_id] = raised
    return alert_id, start


def _end(setup: Setup, start: float) -> None:
    """30 s later nobody is there: the track and the event end."""
    late = Frame("cam1", np.zeros((HEIGHT, WIDTH, 3), np.uint8), 40.0, start + 30, connection=1, seq=999)
    assert setup.pipeline.handle(late, Detections.empty(NAMES)) == []


def _mp4(path: Path, frames: int, shade: int) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10, options={"g": "10", "bf": "0"})
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), shade, np.uint8), format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _image(store: ObjectStore, key: str) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(store.get_bytes(key), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, f"{key} does not decode"
    return image


def test_the_clip_follows_the_event_and_ends_with_it(setup: Setup) -> None:
    setup.start_spool()
    _, start = _walk(setup, [0.8, 0.8, 0.8, 0.8, 0.8], lambda _i: 60)
    [(camera, request)] = setup.requests
    assert camera == "cam1" and request.max_clip_s == 6 and request.post_roll_s == 3
    assert request.wall_time == pytest.approx(start + 1.0, abs=1e-3)  # the alert frame
    seen = request.handle.last
    assert seen is not None and (seen.time_s, seen.connection) == (12.0, 1), "extended to the last sighting"
    assert seen.wall_time == pytest.approx(start + 2.0, abs=1e-3)
    assert setup.pipeline.recording("cam1") and not request.handle.released
    _end(setup, start)
    assert request.handle.released  # no more extensions: it ends post_roll_s after the last sighting
    assert request.handle.last == seen
    request.handle.mark_finished()  # what the stream loop does once its last file is closed
    assert not setup.pipeline.recording("cam1")


def test_every_clip_file_gets_a_row_with_the_sha256_of_its_object(setup: Setup, tmp_path: Path) -> None:
    alert_id, start = _walk(setup, [0.8, 0.8, 0.8], lambda _i: 60)
    [(_, request)] = setup.requests
    files = [_mp4(tmp_path / f"c{i}.mp4", 60 if i < 2 else 25, 40 * (i + 1)) for i in range(3)]
    shas = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    for i, path in enumerate(files):
        request.on_done(
            ClipResult(
                path,
                6.0 if i < 2 else 2.5,
                60,
                path.stat().st_size,
                shas[i],
                "h264",
                sequence=i,
                started_at=start - 2 + 6 * i,
            )
        )
    setup.pipeline.close()  # the upload threads have spooled the three clips; the spool is not running yet
    rows = setup.db.list_clips(alert_id)
    assert [(r.sequence, r.status) for r in rows] == [(0, "pending"), (1, "pending"), (2, "pending")]
    record = setup.db.get_alert(alert_id)
    assert record is not None and record.clip_status == "pending"
    setup.start_spool()
    assert setup.spool.flush(30)
    rows = setup.db.list_clips(alert_id)
    created = record.created_at
    day = f"{created:%Y/%m/%d}"
    assert [r.object_key for r in rows] == [
        f"clips/cam1/{day}/{alert_id}.mp4",
        f"clips/cam1/{day}/{alert_id}-1.mp4",
        f"clips/cam1/{day}/{alert_id}-2.mp4",
    ]
    for row, sha, path in zip(rows, shas, files, strict=True):
        assert row.status == "stored" and row.stored_at is not None
        assert row.sha256 == sha == setup.store.sha256_of(row.object_key)
        assert row.codec == "h264" and row.size_bytes == len(setup.store.get_bytes(row.object_key))
        assert row.started_at is not None
        assert not path.exists(), "the local file is removed once spooled"
    assert [r.duration_s for r in rows] == [6.0, 6.0, 2.5]
    assert rows[1].started_at is not None and rows[0].started_at is not None
    assert (rows[1].started_at - rows[0].started_at).total_seconds() == pytest.approx(6.0, abs=0.01)
    record = setup.db.get_alert(alert_id)
    assert record is not None and record.clip_status == "stored" and record.clip_key == rows[0].object_key
    assert record.clip_duration_s == 6.0  # the alert's summary is its first clip
    clips = [m for _, m in setup.bus.read_all() if m.kind == "clip"]
    # The three files were handed over at once, to two upload threads: their bus messages may come in
    # either order (in a real event a continuation is finished max_clip_s after the clip before it).
    assert sorted((m.sequence, m.clip_key) for m in clips) == [(r.sequence, r.object_key) for r in rows]


def test_a_failed_continuation_does_not_fail_the_alert(setup: Setup) -> None:
    setup.start_spool()
    alert_id, _ = _walk(setup, [0.8, 0.8, 0.8], lambda _i: 60)
    [(_, request)] = setup.requests
    request.on_done(ClipResult(None, 0, 0, 0, None, "h264", error="no keyframe arrived", sequence=1))
    setup.flush()
    record = setup.db.get_alert(alert_id)
    assert record is not None and record.clip_status == "pending" and setup.db.list_clips(alert_id) == []


def test_a_better_frame_replaces_the_snapshot_and_thumbnail_at_the_end(setup: Setup) -> None:
    setup.start_spool()
    # the alert comes at the second run (score 0.6, a dark frame); the best sighting (0.97) is bright
    scores = [0.6, 0.6, 0.7, 0.97, 0.8]
    alert_id, start = _walk(setup, scores, lambda i: 230 if i == 3 else 30)
    assert setup.spool.flush(30)
    record = setup.db.get_alert(alert_id)
    assert record is not None and record.snapshot_key is not None and record.thumbnail_key is not None
    snapshot_key, thumbnail_key = record.snapshot_key, record.thumbnail_key
    assert thumbnail_key == f"thumbnails/cam1/{record.created_at:%Y/%m/%d}/{alert_id}.jpg"
    first = _image(setup.store, snapshot_key)
    assert first.shape == (HEIGHT, WIDTH, 3) and first.mean() < 80, "the alert frame at first"
    thumb = _image(setup.store, thumbnail_key)
    assert thumb.shape == (240, 320, 3) and thumb.mean() < 80
    [alert_message] = [m for _, m in setup.bus.read_all() if m.kind == "alert"]
    assert alert_message.snapshot_key == snapshot_key  # published at once, before the event ends

    _end(setup, start)
    setup.flush()
    record = setup.db.get_alert(alert_id)
    assert record is not None
    assert (record.snapshot_key, record.thumbnail_key) == (snapshot_key, thumbnail_key)  # same keys
    best = _image(setup.store, snapshot_key)
    assert best.shape == (HEIGHT, WIDTH, 3) and best.mean() > 180, "replaced by the best-scoring frame"
    box = best[20:300, 10 + 60 * 3]  # the left edge of the box drawn at the best sighting
    assert np.abs(box.astype(int) - 230).max() > 60, "the best frame has its box drawn"
    thumb = _image(setup.store, thumbnail_key)
    assert thumb.shape == (240, 320, 3) and thumb.mean() > 180
    ended = [m for _, m in setup.bus.read_all() if m.kind == "ended"]
    assert len(ended) == 1 and ended[0].best_score == pytest.approx(0.97)
    assert setup.pipeline.events == {}


def test_no_better_frame_keeps_the_alert_snapshot(setup: Setup) -> None:
    setup.start_spool()
    alert_id, start = _walk(setup, [0.9, 0.9, 0.9, 0.85], lambda i: 30 if i < 3 else 230)
    _end(setup, start)
    setup.flush()
    record = setup.db.get_alert(alert_id)
    assert record is not None and record.snapshot_key is not None
    assert _image(setup.store, record.snapshot_key).mean() < 80  # the alert frame stays
    assert setup.spool.stats.uploads == 2  # the snapshot and the thumbnail, once each
