"""An alert's evidence over its whole event, through the spool, against real Redis, SeaweedFS and SQLite:
the clip is extended while the object is seen, every clip file gets a clips row (pending until the spool
confirms, then stored, with the sha256 of the object), continuation clips get their own keys and bus
messages, and at the end of the event a better-scoring frame replaces the snapshot and the thumbnail."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from alerts.bus import AlertBus
from alerts.pipeline import AlertPipeline
from detect.detections import Detections
from ingest.clip import ClipResult
from ingest.frames import Frame
from ingest.source import ClipRequest
from storage.metadata import MetadataDB
from storage.objectstore import ObjectStore
from storage.spool import Spool

NAMES = ("person",)
WIDTH, HEIGHT = 640, 480

Requests = list[tuple[str, ClipRequest]]


@pytest.fixture()
def pipeline(make_pipeline: Callable[..., AlertPipeline]) -> AlertPipeline:
    """The pipeline of tests/alerts/conftest.py with clips of at most 6 s, its spool uploading."""
    return make_pipeline(max_clip_s=6)


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


def _walk(
    pipeline: AlertPipeline, scores: list[float], brightness: Callable[[int], int]
) -> tuple[str, float]:
    """A person seen every 0.5 s with these scores (alerting once it has travelled); the alert id, start."""
    start = time.time()
    raised: list[str] = []
    for i, score in enumerate(scores):
        raised += pipeline.handle(_frame(start + 0.5 * i, 10.0 + 0.5 * i, brightness(i)), _person(score, i))
    [alert_id] = raised
    return alert_id, start


def _end(pipeline: AlertPipeline, start: float) -> None:
    """30 s later nobody is there: the track and the event end."""
    late = Frame("cam1", np.zeros((HEIGHT, WIDTH, 3), np.uint8), 40.0, start + 30, connection=1, seq=999)
    assert pipeline.handle(late, Detections.empty(NAMES)) == []


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


def test_the_clip_follows_the_event_and_ends_with_it(
    pipeline: AlertPipeline, clip_requests: Requests
) -> None:
    _, start = _walk(pipeline, [0.8, 0.8, 0.8, 0.8, 0.8], lambda _i: 60)
    [(camera, request)] = clip_requests
    assert camera == "cam1" and request.max_clip_s == 6 and request.post_roll_s == 3
    assert request.wall_time == pytest.approx(start + 1.0, abs=1e-3)  # the alert frame
    seen = request.handle.last
    assert seen is not None and (seen.time_s, seen.connection) == (12.0, 1), "extended to the last sighting"
    assert seen.wall_time == pytest.approx(start + 2.0, abs=1e-3)
    assert pipeline.recording("cam1") and not request.handle.released
    _end(pipeline, start)
    assert request.handle.released  # no more extensions: it ends post_roll_s after the last sighting
    assert request.handle.last == seen
    request.handle.mark_finished()  # what the stream loop does once its last file is closed
    assert not pipeline.recording("cam1")


def test_every_clip_file_gets_a_row_with_the_sha256_of_its_object(
    make_pipeline: Callable[..., AlertPipeline],
    pipeline_db: MetadataDB,
    store: ObjectStore,
    spool: Spool,
    bus: AlertBus,
    clip_requests: Requests,
    tmp_path: Path,
) -> None:
    pipeline = make_pipeline(start_spool=False, max_clip_s=6)
    alert_id, start = _walk(pipeline, [0.8, 0.8, 0.8], lambda _i: 60)
    [(_, request)] = clip_requests
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
    pipeline.close()  # the upload threads have spooled the three clips; the spool is not running yet
    rows = pipeline_db.list_clips(alert_id)
    assert [(r.sequence, r.status) for r in rows] == [(0, "pending"), (1, "pending"), (2, "pending")]
    record = pipeline_db.get_alert(alert_id)
    assert record is not None and record.clip_status == "pending"
    spool.start(pipeline.on_spool_stored, pipeline.on_spool_evicted, pipeline.on_spool_failed)
    assert spool.flush(30)
    rows = pipeline_db.list_clips(alert_id)
    created = record.created_at
    day = f"{created:%Y/%m/%d}"
    assert [r.object_key for r in rows] == [
        f"clips/cam1/{day}/{alert_id}.mp4",
        f"clips/cam1/{day}/{alert_id}-1.mp4",
        f"clips/cam1/{day}/{alert_id}-2.mp4",
    ]
    for row, sha, path in zip(rows, shas, files, strict=True):
        assert row.status == "stored" and row.stored_at is not None
        assert row.sha256 == sha == store.sha256_of(row.object_key)
        assert row.codec == "h264" and row.size_bytes == len(store.get_bytes(row.object_key))
        assert row.started_at is not None
        assert not path.exists(), "the local file is removed once spooled"
    assert [r.duration_s for r in rows] == [6.0, 6.0, 2.5]
    assert rows[1].started_at is not None and rows[0].started_at is not None
    assert (rows[1].started_at - rows[0].started_at).total_seconds() == pytest.approx(6.0, abs=0.01)
    record = pipeline_db.get_alert(alert_id)
    assert record is not None and record.clip_status == "stored" and record.clip_key == rows[0].object_key
    assert record.clip_duration_s == 6.0  # the alert's summary is its first clip
    clips = [m for _, m in bus.read_all() if m.kind == "clip"]
    # The three files were handed over at once, to two upload threads: their bus messages may come in
    # either order (in a real event a continuation is finished max_clip_s after the clip before it).
    assert sorted((m.sequence, m.clip_key) for m in clips) == [(r.sequence, r.object_key) for r in rows]


def test_a_failed_continuation_does_not_fail_the_alert(
    pipeline: AlertPipeline,
    pipeline_db: MetadataDB,
    clip_requests: Requests,
    settle: Callable[[AlertPipeline], None],
) -> None:
    alert_id, _ = _walk(pipeline, [0.8, 0.8, 0.8], lambda _i: 60)
    [(_, request)] = clip_requests
    request.on_done(ClipResult(None, 0, 0, 0, None, "h264", error="no keyframe arrived", sequence=1))
    settle(pipeline)
    record = pipeline_db.get_alert(alert_id)
    assert record is not None and record.clip_status == "pending" and pipeline_db.list_clips(alert_id) == []


def test_a_better_frame_replaces_the_snapshot_and_thumbnail_at_the_end(
    pipeline: AlertPipeline,
    pipeline_db: MetadataDB,
    store: ObjectStore,
    spool: Spool,
    bus: AlertBus,
    settle: Callable[[AlertPipeline], None],
) -> None:
    # the alert comes at the second run (score 0.6, a dark frame); the best sighting (0.97) is bright
    scores = [0.6, 0.6, 0.7, 0.97, 0.8]
    alert_id, start = _walk(pipeline, scores, lambda i: 230 if i == 3 else 30)
    assert spool.flush(30)
    record = pipeline_db.get_alert(alert_id)
    assert record is not None and record.snapshot_key is not None and record.thumbnail_key is not None
    snapshot_key, thumbnail_key = record.snapshot_key, record.thumbnail_key
    assert thumbnail_key == f"thumbnails/cam1/{record.created_at:%Y/%m/%d}/{alert_id}.jpg"
    first = _image(store, snapshot_key)
    assert first.shape == (HEIGHT, WIDTH, 3) and first.mean() < 80, "the alert frame at first"
    thumb = _image(store, thumbnail_key)
    assert thumb.shape == (240, 320, 3) and thumb.mean() < 80
    [alert_message] = [m for _, m in bus.read_all() if m.kind == "alert"]
    assert alert_message.snapshot_key == snapshot_key  # published at once, before the event ends

    _end(pipeline, start)
    settle(pipeline)
    record = pipeline_db.get_alert(alert_id)
    assert record is not None
    assert (record.snapshot_key, record.thumbnail_key) == (snapshot_key, thumbnail_key)  # same keys
    best = _image(store, snapshot_key)
    assert best.shape == (HEIGHT, WIDTH, 3) and best.mean() > 180, "replaced by the best-scoring frame"
    box = best[20:300, 10 + 60 * 3]  # the left edge of the box drawn at the best sighting
    assert np.abs(box.astype(int) - 230).max() > 60, "the best frame has its box drawn"
    thumb = _image(store, thumbnail_key)
    assert thumb.shape == (240, 320, 3) and thumb.mean() > 180
    ended = [m for _, m in bus.read_all() if m.kind == "ended"]
    assert len(ended) == 1 and ended[0].best_score == pytest.approx(0.97)
    assert pipeline.events == {}


def test_no_better_frame_keeps_the_alert_snapshot(
    pipeline: AlertPipeline,
    pipeline_db: MetadataDB,
    store: ObjectStore,
    spool: Spool,
    settle: Callable[[AlertPipeline], None],
) -> None:
    alert_id, start = _walk(pipeline, [0.9, 0.9, 0.9, 0.85], lambda i: 30 if i < 3 else 230)
    _end(pipeline, start)
    settle(pipeline)
    record = pipeline_db.get_alert(alert_id)
    assert record is not None and record.snapshot_key is not None
    assert _image(store, record.snapshot_key).mean() < 80  # the alert frame stays
    assert spool.stats.uploads == 2  # the snapshot and the thumbnail, once each
