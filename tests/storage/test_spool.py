"""The on-disk spool against a real SeaweedFS S3 (no mocks): order, atomic writes, rescan, quota, ENOSPC."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gridwatch.services import S3Server, free_port
from storage.objectstore import ObjectStore
from storage.spool import LOCK_NAME, Spool, SpoolItem, SpoolLocked

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
SPOOL_LOG = "storage.spool"


@pytest.fixture
def store(s3_server: S3Server, s3_keys: tuple[str, str]) -> Iterator[ObjectStore]:
    s = ObjectStore(s3_server.endpoint, *s3_keys, bucket=f"spool-{uuid.uuid4().hex[:12]}")
    s.ensure_bucket()
    yield s
    s.close()


@pytest.fixture
def dead_store(s3_keys: tuple[str, str]) -> ObjectStore:
    """Nothing listens there: every request is refused at once (a retryable failure)."""
    return ObjectStore(f"127.0.0.1:{free_port()}", *s3_keys, bucket="spool-dead", timeout=1.0)


class Recorder:
    def __init__(self) -> None:
        self.stored: list[SpoolItem] = []
        self.evicted: list[SpoolItem] = []
        self.failed: list[SpoolItem] = []

    def start(self, spool: Spool) -> Spool:
        return spool.start(self.stored.append, self.evicted.append, self.failed.append)


def _put(spool: Spool, n: int, size: int = 1000, camera: str = "cam1") -> SpoolItem | None:
    alert = f"{n:04d}{uuid.uuid4().hex[:28]}"
    data = hashlib.sha256(str(n).encode()).digest() * (size // 32) + bytes(size % 32)
    return spool.put_bytes(
        "snapshot",
        f"snapshots/{camera}/2026/01/01/{alert}.jpg",
        data,
        "image/jpeg",
        alert_id=alert,
        camera_id=camera,
        tags={"camera": camera},
    )


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def test_items_are_committed_atomically_and_uploaded_oldest_first(store: ObjectStore, tmp_path: Path) -> None:
    spool = Spool(store, tmp_path / "spool", 100 * MiB)
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(12 * MiB))  # above the 5 MiB part size: multipart
    items = [_put(spool, 0), _put(spool, 1)]
    items.append(
        spool.put_file(
            "clip", "clips/cam1/2026/01/01/big.mp4", big, "video/mp4", alert_id="big", camera_id="cam1"
        )
    )
    items += [_put(spool, 3), _put(spool, 4)]
    assert all(i is not None for i in items)
    ready = sorted(p.name for p in (tmp_path / "spool" / "ready").iterdir())
    assert len(ready) == 10 and list((tmp_path / "spool" / "tmp").iterdir()) == []
    clip = items[2]
    assert clip is not None and clip.name in ready and f"{clip.name}.json" in ready
    sidecar = json.loads((tmp_path / "spool" / "ready" / f"{clip.name}.json").read_text())
    assert sidecar["key"] == "clips/cam1/2026/01/01/big.mp4" and sidecar["kind"] == "clip"
    assert sidecar["sha256"] == hashlib.sha256(big.read_bytes()).hexdigest() and sidecar["size"] == 12 * MiB
    assert sidecar["content_type"] == "video/mp4" and sidecar["alert_id"] == "big" and sidecar["created_at"]
    assert [i.seq for i in spool.pending()] == sorted(i.seq for i in spool.pending())

    recorder = Recorder()
    recorder.start(spool)
    assert spool.flush(60), spool.stats
    spool.stop()
    assert [i.key for i in recorder.stored] == [i.key for i in items if i is not None]
    for item in recorder.stored:
        assert store.sha256_of(item.key) == item.sha256
        assert store.metadata(item.key)["sha256"] == item.sha256
    assert store.content_type(clip.key) == "video/mp4"
    assert str(store._client.stat_object(store.bucket, clip.key).etag).endswith("-3"), "12 MiB in three parts"
    assert list((tmp_path / "spool" / "ready").iterdir()) == [], "local files go after a confirmed upload"
    assert spool.stats.uploads == 5 and spool.stats.items == 0 and spool.stats.bytes == 0


def test_rescan_after_a_crash_removes_partial_writes_and_requeues_in_order(
    store: ObjectStore, tmp_path: Path
) -> None:
    directory = tmp_path / "spool"
    first = Spool(store, directory, 100 * MiB)
    items = [_put(first, n) for n in range(3)]
    # What a crash leaves: a half-written temp file, and a data file renamed without its sidecar (no commit).
    (directory / "tmp" / "000000000007-dead.clip").write_bytes(b"half a clip")
    (directory / "ready" / "000000000050-orphan.clip").write_bytes(b"no sidecar")
    del first  # never started, never stopped: as after SIGKILL

    second = Spool(store, directory, 100 * MiB)
    recorder = Recorder()
    recorder.start(second)
    assert second.flush(30), second.stats
    later = _put(second, 9)
    assert second.flush(30)
    second.stop()
    assert list((directory / "tmp").iterdir()) == []
    assert not (directory / "ready" / "000000000050-orphan.clip").exists()
    assert [i.key for i in recorder.stored] == [i.key for i in [*items, later] if i is not None]
    assert later is not None and later.seq > 50, "sequence numbers continue after what is on disk"


def test_quota_evicts_the_oldest_items_first_and_logs_each(
    dead_store: ObjectStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(dead_store, tmp_path / "spool", quota_bytes=3 * 100_000 + 10)
    recorder = Recorder()
    spool.on_evicted = recorder.evicted.append
    with caplog.at_level(logging.WARNING, logger=SPOOL_LOG):
        items = [_put(spool, n, size=100_000) for n in range(5)]
    assert all(i is not None for i in items)
    assert [i.key for i in recorder.evicted] == [i.key for i in items[:2] if i is not None]
    assert [i.key for i in spool.pending()] == [i.key for i in items[2:] if i is not None]
    assert spool.stats.evictions == 2 and spool.stats.bytes == 300_000 and spool.stats.items == 3
    warnings = [r.getMessage() for r in caplog.records if "evicted" in r.getMessage()]
    assert len(warnings) == 2
    for item, text in zip(recorder.evicted, warnings, strict=True):
        assert item.key in text and item.alert_id in text
    on_disk = {p.name for p in (tmp_path / "spool" / "ready").iterdir()}
    assert on_disk == {n for i in items[2:] if i is not None for n in (i.name, f"{i.name}.json")}
    # An item larger than the whole quota is refused, not allowed to evict everything.
    assert _put(spool, 9, size=400_000) is None and spool.stats.write_failures == 1


def test_a_full_disk_is_logged_and_counted_and_crashes_nothing(
    store: ObjectStore, small_disk: Callable[[int], Path], caplog: pytest.LogCaptureFixture
) -> None:
    directory = small_disk(512 * 1024)
    spool = Spool(store, directory / "spool", quota_bytes=100 * MiB)  # the quota does not help here
    with caplog.at_level(logging.ERROR, logger=SPOOL_LOG):
        results = [_put(spool, n, size=100_000) for n in range(8)]
    kept = [r for r in results if r is not None]
    assert 1 <= len(kept) < 8, "some fit, the rest hit ENOSPC"
    assert spool.stats.write_failures == 8 - len(kept)
    assert any("disk full" in r.getMessage() and "No space left" in r.getMessage() for r in caplog.records)
    assert list((directory / "spool" / "tmp").iterdir()) == [], "no half-written leftovers"
    recorder = Recorder()
    recorder.start(spool)
    assert spool.flush(30)
    spool.stop()
    assert [i.key for i in recorder.stored] == [i.key for i in kept]
    for item in kept:
        assert store.sha256_of(item.key) == item.sha256


def test_a_permanent_failure_moves_the_item_to_failed_and_says_why(
    s3_server: S3Server, s3_keys: tuple[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    refused = ObjectStore(s3_server.endpoint, s3_keys[0], "not-the-secret", bucket="spool-refused")
    spool = Spool(refused, tmp_path / "spool", 10 * MiB)
    item = _put(spool, 0, camera="cam-7")
    recorder = Recorder()
    with caplog.at_level(logging.ERROR, logger=SPOOL_LOG):
        recorder.start(spool)
        _wait(lambda: bool(recorder.failed), 20, "the item failed")
        spool.stop()
    assert item is not None and [i.key for i in recorder.failed] == [item.key] and recorder.stored == []
    failed = {p.name for p in (tmp_path / "spool" / "failed").iterdir()}
    assert failed == {item.name, f"{item.name}.json"}, "kept for an operator"
    [text] = [r.getMessage() for r in caplog.records if "cannot be uploaded" in r.getMessage()]
    assert "cam-7" in text and item.alert_id in text and item.key in text and "SignatureDoesNotMatch" in text
    assert spool.stats.permanent_failures == 1


def test_a_spooled_file_changed_on_disk_is_not_uploaded(store: ObjectStore, tmp_path: Path) -> None:
    spool = Spool(store, tmp_path / "spool", 10 * MiB)
    item = _put(spool, 0, size=5000)
    assert item is not None
    item.path.write_bytes(b"\x00" * 5000)  # same size, other bytes: a bad disk
    recorder = Recorder()
    recorder.start(spool)
    _wait(lambda: bool(recorder.failed), 20, "the changed file was refused")
    spool.stop()
    assert not store.exists(item.key)


def test_uploads_wait_for_a_store_that_is_not_up_yet_then_go_in_order(
    s3_keys: tuple[str, str], tmp_path: Path
) -> None:
    server = S3Server(tmp_path / "s3", *s3_keys)  # ports chosen, not started: connections are refused
    store = ObjectStore(server.endpoint, *s3_keys, bucket="spool-late", timeout=1.0)
    spool = Spool(store, tmp_path / "spool", 10 * MiB, retry_initial_s=0.1, retry_max_s=0.5)
    recorder = Recorder()
    items = [_put(spool, n) for n in range(3)]
    recorder.start(spool)  # ensure_bucket fails here: logged, retried, not fatal
    _wait(lambda: spool.stats.upload_failures >= 2, 10, "uploads were tried and failed")
    assert recorder.stored == [] and len(spool.pending()) == 3
    server.start(timeout=60)
    try:
        assert spool.flush(60), spool.stats
        spool.stop()
        assert [i.key for i in recorder.stored] == [i.key for i in items if i is not None]
        assert all(store.sha256_of(i.key) == i.sha256 for i in recorder.stored)
    finally:
        server.stop()


def test_stop_keeps_what_it_could_not_upload(dead_store: ObjectStore, tmp_path: Path) -> None:
    spool = Spool(dead_store, tmp_path / "spool", 10 * MiB, retry_initial_s=0.1)
    items = [_put(spool, n) for n in range(2)]
    spool.start()
    started = time.monotonic()
    spool.stop(grace_s=0.5)
    assert time.monotonic() - started < 5
    again = Spool(dead_store, tmp_path / "spool", 10 * MiB)
    again._rescan()
    assert [i.key for i in again.pending()] == [i.key for i in items if i is not None]


def test_continuation_clips_and_thumbnails_keep_their_fields_across_a_restart(
    store: ObjectStore, tmp_path: Path
) -> None:
    spool = Spool(store, tmp_path / "spool", 100 * MiB)
    clips = []
    for sequence in (0, 1):
        clip = tmp_path / f"clip-{sequence}.mp4"
        clip.write_bytes(os.urandom(2000 + sequence))
        key = f"clips/cam1/2026/01/01/a1{f'-{sequence}' if sequence else ''}.mp4"
        item = spool.put_file(
            "clip",
            key,
            clip,
            "video/mp4",
            alert_id="a1",
            camera_id="cam1",
            duration_s=6.0,
            clip_id=f"row{sequence}",
            sequence=sequence,
        )
        assert item is not None
        clips.append(item)
    thumbnail = spool.put_bytes(
        "thumbnail",
        "thumbnails/cam1/2026/01/01/a1.jpg",
        b"\xff\xd8tiny",
        "image/jpeg",
        alert_id="a1",
        camera_id="cam1",
    )
    assert thumbnail is not None and thumbnail.sequence is None and thumbnail.clip_id is None
    assert len({i.name for i in [*clips, thumbnail]}) == 3, "each item its own file"
    spool.stop()  # never started: this only releases the directory

    again = Spool(store, tmp_path / "spool", 100 * MiB)  # a restart: the sidecars are read back
    recorder = Recorder()
    recorder.start(again)
    try:
        _wait(lambda: len(recorder.stored) == 3, 30, "three items uploaded")
    finally:
        again.stop()
    assert [(i.kind, i.clip_id, i.sequence, i.duration_s) for i in recorder.stored] == [
        ("clip", "row0", 0, 6.0),
        ("clip", "row1", 1, 6.0),
        ("thumbnail", None, None, None),
    ]
    assert store.get_bytes("thumbnails/cam1/2026/01/01/a1.jpg") == b"\xff\xd8tiny"
    assert store.sha256_of("clips/cam1/2026/01/01/a1-1.mp4") == clips[1].sha256


# -- one spool per directory ----------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from storage.objectstore import ObjectStore
    from storage.spool import Spool, SpoolLocked

    directory, mode = Path(sys.argv[1]), sys.argv[2]
    store = ObjectStore("127.0.0.1:9", "access", "secret-key", "spool-lock")
    try:
        spool = Spool(store, directory, 1024 * 1024)
    except SpoolLocked as exc:
        print("LOCKED", exc, flush=True)
        sys.exit(3)
    print("OPEN", flush=True)
    if mode == "hold":
        sys.stdin.readline()  # until the test closes our stdin
    spool.stop()
    print("CLOSED", flush=True)
    """
)


def _holder(directory: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory), mode],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_second_process_on_the_same_spool_directory_fails_at_once(
    dead_store: ObjectStore, tmp_path: Path
) -> None:
    directory = tmp_path / "spool"
    holder = _holder(directory, "hold")
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "OPEN", holder.stderr
        assert (directory / LOCK_NAME).read_text().strip() == str(holder.pid), "the lock names its holder"
        started = time.monotonic()
        with pytest.raises(SpoolLocked) as refused:
            Spool(dead_store, directory, 10 * MiB)
        assert time.monotonic() - started < 5, "refused at once, not after waiting for the lock"
        assert str(directory) in str(refused.value) and f"process {holder.pid}" in str(refused.value)
        assert refused.value.holder == str(holder.pid)
    finally:
        holder.kill()  # as after SIGKILL: the kernel releases the lock with the process
        holder.communicate(timeout=30)

    ours = Spool(dead_store, directory, 10 * MiB)  # the dead worker's directory can be taken over
    try:
        assert (directory / LOCK_NAME).read_text().strip() == str(os.getpid())
        second = _holder(directory, "once")
        out, err = second.communicate(timeout=60)
        assert second.returncode == 3, (out, err)
        assert f"LOCKED spool directory {directory} is in use by process {os.getpid()}" in out
    finally:
        ours.stop()
    third = _holder(directory, "once")
    out, err = third.communicate(timeout=60)
    assert third.returncode == 0 and out.split() == ["OPEN", "CLOSED"], (out, err)


def test_a_second_spool_in_the_same_process_fails_and_stop_releases(
    dead_store: ObjectStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "spool"
    first = Spool(dead_store, directory, 10 * MiB, retry_initial_s=0.1)
    with pytest.raises(SpoolLocked, match=re.escape(f"{directory} is in use by process {os.getpid()} (this")):
        Spool(dead_store, directory, 10 * MiB)
    first.start()
    with pytest.raises(SpoolLocked):
        Spool(dead_store, directory, 10 * MiB)  # still held while uploading
    item = _put(first, 0)
    assert item is not None
    first.stop(grace_s=0.2)  # the store is dead: the item stays on disk

    with caplog.at_level(logging.ERROR, logger=SPOOL_LOG):
        assert _put(first, 1) is None, "a stopped spool no longer writes into a directory it gave up"
    assert first.stats.write_failures == 1 and any("is stopped" in r.getMessage() for r in caplog.records)
    with Spool(dead_store, directory, 10 * MiB) as second:
        second._rescan()
        assert [i.key for i in second.pending()] == [item.key]
        with pytest.raises(SpoolLocked):
            first.start()  # a stopped spool locks again to restart, and cannot while another has it
    first.start()  # the other one is closed: restarting locks the directory again
    try:
        with pytest.raises(SpoolLocked):
            Spool(dead_store, directory, 10 * MiB)
    finally:
        first.stop(grace_s=0.2)
