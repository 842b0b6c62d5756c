"""The object store goes away, the worker dies, the disk fills: no alert and no stored clip is lost.

Real servers only: a SeaweedFS of each test's own (so freezing it freezes no other test), the session Redis,
SQLite (the freeze also on the session's PostgreSQL), and real MP4 clips remuxed from the test media.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

from alerts.bus import AlertBus
from alerts.pipeline import AlertPipeline, CameraPlace
from alerts.rules import Rule, RuleEngine
from detect.detections import Detections
from gridwatch.runtime import Runtime
from gridwatch.services import RedisServer, S3Server, free_port
from gridwatch.settings import Settings
from ingest.clip import ClipResult, ClipWriter
from ingest.frames import Frame
from ingest.ring import RingPacket
from ingest.source import ClipRequest
from storage.metadata import MetadataDB
from storage.objectstore import ObjectStore
from storage.spool import Spool

MiB = 1024 * 1024
REPO = Path(__file__).resolve().parents[1]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)
    return time.monotonic() - started


def _remux_clips(source: Path, out_dir: Path, count: int, seconds: int = 2) -> list[Path]:
    """`count` different real clips, each `seconds` long from its own keyframe, remuxed by ClipWriter."""
    out_dir.mkdir(parents=True, exist_ok=True)
    clips: list[Path] = []
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        assert stream.time_base is not None
        writer: ClipWriter | None = None
        keyframes = 0
        for packet in container.demux(stream):
            if packet.pts is None or packet.size == 0:
                continue
            if packet.is_keyframe:
                if writer is not None and keyframes % seconds == 0:
                    writer.close()
                    writer = None
                    if len(clips) == count:
                        break
                if writer is None and keyframes % seconds == 0:
                    path = out_dir / f"clip-{len(clips):02d}.mp4"
                    writer = ClipWriter(path, stream)
                    clips.append(path)
                keyframes += 1
            if writer is not None:
                time_s = float(packet.pts * stream.time_base)
                writer.write(RingPacket(bytes(packet), packet.pts, packet.dts, packet.is_keyframe, time_s, 1))
        if writer is not None:
            writer.close()
    assert len(clips) == count, f"{source} has too few keyframes for {count} clips"
    return clips


NAMES = ("person",)


def _frame(camera: str, at: float) -> Frame:
    return Frame(camera, np.zeros((240, 320, 3), np.uint8), time_s=4.0, captured_at=at, connection=1, seq=1)


def _person(step: int) -> Detections:
    x = 10 + 60 * step
    return Detections(
        np.array([[x, 20, x + 50, 200]], np.float32),
        np.array([0.9], np.float32),
        np.array([0], np.int32),
        NAMES,
    )


@dataclass
class Setup:
    pipeline: AlertPipeline
    spool: Spool
    db: MetadataDB
    bus: AlertBus
    store: ObjectStore
    requests: list[tuple[str, ClipRequest]]

    def alert(self, camera: str) -> str:
        """A person walks in front of `camera`: two detector runs raise one alert."""
        start = time.time()
        assert self.pipeline.handle(_frame(camera, start), _person(0)) == []
        [alert_id] = self.pipeline.handle(_frame(camera, start + 0.5), _person(1))
        return alert_id

    def clip_done(self, alert_index: int, clip: Path) -> None:
        _, request = self.requests[alert_index]
        with av.open(str(clip)) as c:
            duration = float(c.duration or 0) / av.time_base
        request.on_done(ClipResult(clip, duration, 20, clip.stat().st_size, _sha256(clip), "h264"))

    def bus_kinds(self) -> list[tuple[str, str]]:
        return [(m.kind, m.alert_id) for _, m in self.bus.read_all()]


@contextlib.contextmanager
def _setup(
    tmp_path: Path,
    redis_url: str,
    store: ObjectStore,
    spool_dir: Path,
    quota: int,
    cameras: int,
    db_url: str | None = None,
) -> Iterator[Setup]:
    db = MetadataDB(db_url or f"sqlite:///{tmp_path / 'outage.db'}")
    db.create_schema()
    bus = AlertBus.from_url(redis_url, stream=f"test:outage:{uuid.uuid4().hex}", maxlen=10_000)
    spool = Spool(store, spool_dir, quota, retry_initial_s=0.5, retry_max_s=2.0)
    requests: list[tuple[str, ClipRequest]] = []
    pipeline = AlertPipeline(
        rules=RuleEngine([Rule("people", frozenset({"person"}), 0.5, cooldown_s=600)]),
        bus=bus,
        db=db,
        store=store,
        places={f"cam{i:02d}": CameraPlace("v1", "g1") for i in range(cameras)},
        request_clip=lambda cam, req: requests.append((cam, req)),
        pre_roll_s=1,
        post_roll_s=1,
        spool=spool,
    )
    spool.start(pipeline.on_spool_stored, pipeline.on_spool_evicted, pipeline.on_spool_failed)
    try:
        yield Setup(pipeline, spool, db, bus, store, requests)
    finally:
        pipeline.close()
        spool.stop(grace_s=1)
        bus.client.delete(bus.stream)
        bus.close()
        db.close()


@pytest.fixture
def own_s3(tmp_path: Path, s3_keys: tuple[str, str]) -> Iterator[S3Server]:
    """A SeaweedFS for this test alone (it gets frozen or is started late)."""
    server = S3Server(tmp_path / "own-s3", *s3_keys)
    try:
        yield server
    finally:
        server.stop()


def test_store_frozen_60_s_while_20_alerts_happen(
    own_s3: S3Server,
    s3_keys: tuple[str, str],
    redis_server: RedisServer,
    media: dict[str, Path],
    tmp_path: Path,
    db_url: str,
) -> None:
    """On SQLite and on PostgreSQL (`db_url` runs it once per dialect)."""
    own_s3.start(timeout=60)
    store = ObjectStore(own_s3.endpoint, *s3_keys, bucket="outage", timeout=3.0)
    store.ensure_bucket()
    clips = _remux_clips(media["people"], tmp_path / "clips", 20)
    clip_sha = [_sha256(c) for c in clips]
    with _setup(tmp_path, redis_server.url, store, tmp_path / "spool", 500 * MiB, 20, db_url) as setup:
        own_s3.pause()
        frozen_at = time.monotonic()
        alert_ids: list[str] = []
        try:
            for i in range(20):  # spread over the first 40 s of the freeze
                alert_ids.append(setup.alert(f"cam{i:02d}"))
                assert ("alert", alert_ids[-1]) in setup.bus_kinds(), "the alert is on the bus at once"
                setup.clip_done(i, clips[i])
                time.sleep(max(0.0, frozen_at + 2 * (i + 1) - time.monotonic()))
            _wait(lambda: len(setup.spool.pending()) >= 39, 20, "all snapshots and clips spooled")
            records = [setup.db.get_alert(a) for a in alert_ids]
            assert all(r is not None and r.clip_status == "pending" for r in records)
            assert all(r is not None and r.snapshot_key is None for r in records), "nothing stored yet"
            assert [m.snapshot_key is not None for _, m in setup.bus.read_all()] == [True] * 20
            time.sleep(max(0.0, frozen_at + 60 - time.monotonic()))
            assert setup.spool.stats.uploads == 0
        finally:
            frozen_s = time.monotonic() - frozen_at
            own_s3.resume()
        assert frozen_s >= 60

        def all_stored() -> bool:
            records = [setup.db.get_alert(a) for a in alert_ids]
            return all(r is not None and r.clip_status == "stored" and r.snapshot_key for r in records)

        landed_s = _wait(all_stored, 120, "all 20 clips and snapshots stored after the store came back")
        logging.getLogger(__name__).warning("20 clips + 20 snapshots landed %.1f s after SIGCONT", landed_s)
        print(f"\n20 clips + 20 snapshots landed {landed_s:.1f} s after SIGCONT")
        for alert_id, sha in zip(alert_ids, clip_sha, strict=True):
            record = setup.db.get_alert(alert_id)
            assert record is not None and record.clip_key is not None and record.snapshot_key is not None
            assert store.sha256_of(record.clip_key) == sha
            assert store.metadata(record.clip_key)["sha256"] == sha
            snapshot_sha = store.sha256_of(record.snapshot_key)
            assert store.metadata(record.snapshot_key)["sha256"] == snapshot_sha
            assert store.content_type(record.clip_key) == "video/mp4"
        _wait(lambda: sum(k == "clip" for k, _ in setup.bus_kinds()) == 20, 10, "20 clip messages")
        assert sorted(a for k, a in setup.bus_kinds() if k == "clip") == sorted(alert_ids)
        assert list((tmp_path / "spool" / "ready").iterdir()) == []


WORKER = textwrap.dedent(
    """
    import json, sys, threading, time
    from pathlib import Path
    from minio import Minio
    from storage.objectstore import ObjectStore
    from storage.spool import Spool

    endpoint, access, secret, bucket, spool_dir, mode = sys.argv[1:7]
    store = ObjectStore(endpoint, access, secret, bucket)
    spool = Spool(store, Path(spool_dir), 100 * 1024 * 1024, retry_initial_s=0.2)
    if mode == "spool":
        clip = Path(sys.argv[7])
        item = spool.put_file("clip", sys.argv[8], clip, "video/mp4", alert_id="a1", camera_id="cam1")
        upload_part = Minio._upload_part

        def slow_upload_part(self, *args, **kwargs):
            etag = upload_part(self, *args, **kwargs)
            print("PART-UPLOADED", flush=True)
            threading.Event().wait()  # parts keep going up, the upload never completes: killed here
            return etag

        Minio._upload_part = slow_upload_part
    spool.start(on_stored=lambda item: print("STORED", json.dumps(item.sidecar()), flush=True))
    print("FLUSHED" if spool.flush(60) else "NOT-FLUSHED", flush=True)
    spool.stop()
    """
)


def test_worker_killed_mid_multipart_upload_leaves_no_object_and_uploads_after_restart(
    s3_server: S3Server, s3_keys: tuple[str, str], media: dict[str, Path], tmp_path: Path
) -> None:
    store = ObjectStore(s3_server.endpoint, *s3_keys, bucket=f"kill-{uuid.uuid4().hex[:12]}")
    store.ensure_bucket()
    clip = tmp_path / "clip.mp4"
    shutil.copyfile(media["people"], clip)  # a real 15 MB clip: three 5 MiB parts
    assert clip.stat().st_size > 2 * 5 * MiB
    key = "clips/cam1/2026/01/01/a1.mp4"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    args = [sys.executable, str(script), s3_server.endpoint, *s3_keys, store.bucket, str(tmp_path / "spool")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    worker = subprocess.Popen(
        [*args, "spool", str(clip), key], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert worker.stdout is not None
        line = worker.stdout.readline()
        assert line.strip() == "PART-UPLOADED", (
            line,
            worker.stderr.read() if worker.stderr and worker.poll() is not None else "",
        )
        assert [k for k, _, _ in store.incomplete_uploads("clips/")] == [key], (
            "killed inside a multipart upload"
        )
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert not store.exists(key), "an unfinished multipart upload is not an object"
    assert [o.object_name for o in store._client.list_objects(store.bucket, recursive=True)] == []
    assert len(list((tmp_path / "spool" / "ready").iterdir())) == 2, "the clip and its sidecar wait on disk"

    again = subprocess.run([*args, "drain"], capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "FLUSHED" in again.stdout.splitlines(), again.stdout + again.stderr
    [stored] = [json.loads(x.split(" ", 1)[1]) for x in again.stdout.splitlines() if x.startswith("STORED ")]
    assert stored["key"] == key and stored["sha256"] == _sha256(clip)
    assert store.sha256_of(key) == _sha256(clip)
    assert store.metadata(key)["sha256"] == _sha256(clip)
    assert str(store._client.stat_object(store.bucket, key).etag).endswith("-3"), "uploaded in parts again"
    assert store.incomplete_uploads("clips/") == [], "the killed upload was aborted at restart"
    assert list((tmp_path / "spool" / "ready").iterdir()) == []


def test_disk_full_alerts_still_go_out_and_evictions_are_logged(
    own_s3: S3Server,
    s3_keys: tuple[str, str],
    redis_server: RedisServer,
    media: dict[str, Path],
    small_disk: Callable[[int], Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The store is not up (its ports are chosen, nothing listens): everything stays in the spool.
    store = ObjectStore(own_s3.endpoint, *s3_keys, bucket="full", timeout=1.0)
    clips = _remux_clips(media["people"], tmp_path / "clips", 12)
    sizes = [c.stat().st_size for c in clips]
    clip_sha = [_sha256(c) for c in clips]
    disk = small_disk(3 * MiB)
    quota = int(4 * max(sizes))  # about four clips
    with _setup(tmp_path, redis_server.url, store, disk / "spool", quota, 12) as setup:
        alert_ids: list[str] = []
        with caplog.at_level(logging.WARNING, logger="storage.spool"):
            for i in range(8):
                alert_ids.append(setup.alert(f"cam{i:02d}"))
                setup.clip_done(i, clips[i])
            _wait(lambda: not any(c.exists() for c in clips[:8]), 30, "the clips were taken by the spool")
            evicted = [r.getMessage() for r in caplog.records if "evicted" in r.getMessage()]
            assert len(evicted) >= 3 and setup.spool.stats.evictions == len(evicted)
            assert any(alert_ids[0] in text and "clips/cam00/" in text for text in evicted)
            first = setup.db.get_alert(alert_ids[0])
            assert first is not None and first.clip_status == "failed"
            assert first.clip_error == "evicted from the spool (disk quota)"

            # Something else fills the disk: the spool's writes now fail with ENOSPC.
            ballast = disk / "ballast"
            with open(ballast, "wb") as out, pytest.raises(OSError):
                while True:
                    out.write(b"\x00" * 65536)
                    out.flush()
            for i in range(8, 12):
                alert_ids.append(setup.alert(f"cam{i:02d}"))
                setup.clip_done(i, clips[i])
        assert setup.spool.stats.write_failures >= 2
        assert any("disk full" in r.getMessage() for r in caplog.records)
        kinds = setup.bus_kinds()
        assert [a for k, a in kinds if k == "alert"] == alert_ids, "every alert went out"
        _wait(lambda: not any(c.exists() for c in clips[8:]), 30, "the late clips were handed to the spool")
        # Quota evictions free some room on the full disk too, so a late clip may still fit; the others fail.
        late = [setup.db.get_alert(a) for a in alert_ids[8:]]
        not_spooled = [r for r in late if r is not None and r.clip_error and "not spooled" in r.clip_error]
        assert all(r.clip_status == "failed" for r in not_spooled)
        assert all(r is not None and r.clip_status in ("pending", "failed") for r in late)

        ballast.unlink()
        own_s3.start(timeout=60)  # the store comes back: what is still spooled lands
        kept = [i.alert_id for i in setup.spool.pending() if i.kind == "clip"]
        assert kept, "some clips survived in the spool"
        _wait(lambda: setup.spool.stats.items == 0, 60, "the spool drained")
        for alert_id in kept:
            record = setup.db.get_alert(alert_id)
            assert record is not None and record.clip_status == "stored" and record.clip_key
            assert store.sha256_of(record.clip_key) == clip_sha[alert_ids.index(alert_id)]


def test_a_worker_starts_and_spools_while_the_store_is_down(
    redis_server: RedisServer, tmp_path: Path, s3_keys: tuple[str, str]
) -> None:
    settings = Settings.model_validate(
        {
            "data_dir": str(tmp_path / "data"),
            "redis": {"url": redis_server.url},
            "s3": {
                "endpoint": f"127.0.0.1:{free_port()}",
                "access_key": s3_keys[0],
                "secret_key": s3_keys[1],
            },
            "api": {"enabled": False},
            "spool": {"quota_mb": 64, "retry_initial_s": 0.2, "retry_max_s": 1, "stop_grace_s": 0.5},
        }
    )
    runtime = Runtime(settings, detectors=[]).start()
    try:
        assert runtime.spool is not None
        item = runtime.spool.put_bytes(
            "snapshot", "snapshots/c/2026/01/01/x.jpg", b"jpeg", "image/jpeg", alert_id="x", camera_id="c"
        )
        assert item is not None and item.path.parent == (tmp_path / "data" / "spool" / "ready").resolve()
        _wait(lambda: runtime.spool is not None and runtime.spool.stats.upload_failures > 0, 20, "tried")
    finally:
        started = time.monotonic()
        runtime.stop()
        assert time.monotonic() - started < 15
    assert item.path.exists(), "kept on disk for the next start"
