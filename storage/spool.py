"""A durable on-disk spool in front of the object store: every clip and snapshot goes through it.

Writing (any thread): the data goes to `<dir>/tmp/<seq>-<id>`, is fsynced and renamed into `<dir>/ready/`;
then its JSON sidecar (key, content type, tags, sha256, size, created time, alert id, camera, kind; for a
clip also its duration, clips-row id and sequence) is written the same way. The sidecar's rename is the
commit: a data file in ready/ without a sidecar is an interrupted write (removed at the next start), never an
item. `put_bytes`/`put_file` never raise on a local disk problem (ENOSPC or any other OSError): they log it,
count it and return None, so the alert that owns the item still goes out.

Uploading (one thread, so the order is the spool's order): the oldest item is uploaded first. A retryable
failure (network, timeout, 5xx) retries that same item with capped exponential backoff, so nothing overtakes
it; a permanent failure (403, a local file that no longer matches its sha256, ...) moves the item to
`<dir>/failed/` (kept for an operator: moving it back to ready/ retries it at the next start) and logs
camera, alert, key and reason. Files above `part_size` go up as a multipart upload (the minio SDK); S3 makes
an object visible only when its multipart upload completes, so an upload killed half-way leaves no partial
object.

Verification: the upload carries the sha256 as object metadata (`x-amz-meta-sha256`), and the object is then
read back and hashed; the local file is deleted only when that hash equals the sidecar's. Reading back costs
a download per item, but it is the one check that does not depend on the server: ETags are MD5 (of parts,
for multipart) and SigV4 payload hashes are not sent over TLS. A mismatch is uploaded again, three times at
most (then the item goes to failed/).

Disk quota: when an item would take the ready items over `quota_bytes`, the oldest ready items (not the one
being uploaded) are evicted first; each eviction is a warning naming key and alert, counted in `stats`.
Items in failed/ are outside the quota.

One spool directory, one `Spool`: opening one takes an exclusive `flock` on `<dir>/spool.lock` (and writes
its pid there); a second one on the same directory, in another process or in this one, fails at once with
`SpoolLocked` naming the directory and the pid that holds it. Two workers sharing a directory would delete
each other's half-written files at start and upload each other's items twice. `stop()` (or `close()`)
releases the lock, as does the end of the process, however it ends.

At start the spool removes leftovers in tmp/, re-queues ready/ in sequence order, and aborts incomplete
multipart uploads of its own items' keys (and, under `clips/`, `snapshots/` and `thumbnails/`, those older
than `stale_upload_s`). The SDK has no public call for that: `ObjectStore.abort_incomplete_uploads` uses
minio's `_list_multipart_uploads` and `_abort_multipart_upload`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

from storage.objectstore import ObjectStore, StorageError

__all__ = ["LOCK_NAME", "Spool", "SpoolItem", "SpoolLocked", "SpoolStats"]

log = logging.getLogger(__name__)

Kind = Literal["clip", "snapshot", "thumbnail"]
KINDS: tuple[str, ...] = ("clip", "snapshot", "thumbnail")
Callback = Callable[["SpoolItem"], None]
PART_SIZE = 5 * 1024 * 1024  # the S3 minimum part size; larger files go up multipart
_CHUNK = 1024 * 1024
_NAME = re.compile(r"(\d{12})-([A-Za-z0-9._-]+)")
_PREFIXES = ("clips/", "snapshots/", "thumbnails/")
_MAX_MISMATCHES = 3
LOCK_NAME = "spool.lock"


class SpoolLocked(RuntimeError):
    """Another `Spool` (another worker process, or one in this process) has the directory open."""

    def __init__(self, directory: Path, holder: str) -> None:
        self.directory = directory
        self.holder = holder  # the pid written in the lock file, as text ("unknown" if none was readable)
        super().__init__(
            f"spool directory {directory} is in use by process {holder} (lock {directory / LOCK_NAME}): "
            "two workers must not share a spool; give each its own spool.dir"
        )


@dataclass(frozen=True, slots=True)
class SpoolItem:
    """One spooled object: what its sidecar holds. `path` is its data file in ready/ (or failed/)."""

    seq: int
    id: str
    kind: Kind
    key: str
    content_type: str
    tags: Mapping[str, str]
    sha256: str
    size: int
    created_at: str  # ISO 8601 UTC, when it was spooled
    alert_id: str
    camera_id: str
    duration_s: float | None = None  # clips: their length, for the metadata row
    clip_id: str | None = None  # clips: the id of their row in the clips table
    sequence: int | None = None  # clips: 0 for an alert's first clip, 1, 2... for continuations
    path: Path = field(default=Path(), compare=False)

    @property
    def name(self) -> str:
        return f"{self.seq:012d}-{self.id}"

    def sidecar(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("path")
        data["tags"] = dict(self.tags)
        data["version"] = 1
        return data


@dataclass(frozen=True, slots=True)
class _Extra:
    """What a clip's sidecar carries besides the common fields."""

    duration_s: float | None = None
    clip_id: str | None = None
    sequence: int | None = None


@dataclass(slots=True)
class SpoolStats:
    items: int = 0
    bytes: int = 0
    uploads: int = 0
    upload_failures: int = 0  # every failed attempt, retried or not
    permanent_failures: int = 0
    evictions: int = 0
    write_failures: int = 0


def _noop(_item: SpoolItem) -> None:
    pass


class Spool:
    """See the module docstring. Creating one locks the directory (`SpoolLocked` if another spool has it);
    `start()` rescans and starts the uploader; `stop()` / `close()` flush briefly and release the lock."""

    def __init__(
        self,
        store: ObjectStore,
        directory: Path,
        quota_bytes: int,
        *,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 60.0,
        part_size: int = PART_SIZE,
        stale_upload_s: float = 24 * 3600,
    ) -> None:
        if quota_bytes <= 0:
            raise ValueError("the spool quota must be positive")
        if part_size < PART_SIZE:
            raise ValueError(f"the part size must be at least {PART_SIZE} bytes (S3 minimum)")
        self.store = store
        self.directory = Path(directory)
        self.quota_bytes = quota_bytes
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = max(retry_max_s, retry_initial_s)
        self.part_size = part_size
        self.stale_upload_s = stale_upload_s
        self.on_stored: Callback = _noop
        self.on_evicted: Callback = _noop
        self.on_failed: Callback = _noop
        self.stats = SpoolStats()
        self._tmp = self.directory / "tmp"
        self._ready = self.directory / "ready"
        self._failed = self.directory / "failed"
        self._queue: list[SpoolItem] = []  # ready items, oldest (lowest seq) first
        self._reserved = 0  # bytes of items being written
        self._inflight: SpoolItem | None = None
        self._seq = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._bucket_ready = False
        self._lock_file: IO[str] | None = _lock_directory(self.directory)

    # -- life cycle -------------------------------------------------------------------------------
    def start(
        self,
        on_stored: Callback | None = None,
        on_evicted: Callback | None = None,
        on_failed: Callback | None = None,
    ) -> Spool:
        """Rescan the directory, then upload in the background. Callbacks run in the uploader thread.

        A spool stopped before locks its directory again (`SpoolLocked` if another spool took it)."""
        if self._lock_file is None:
            self._lock_file = _lock_directory(self.directory)
        self.on_stored = on_stored or self.on_stored
        self.on_evicted = on_evicted or self.on_evicted
        self.on_failed = on_failed or self.on_failed
        self._rescan()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="spool-upload", daemon=True)
        self._thread.start()
        return self

    def stop(self, grace_s: float = 5.0) -> None:
        """Upload what can be uploaded within `grace_s`, then stop and release the directory's lock; the rest
        stays on disk for next time. Writes to a stopped spool are refused (logged, counted, None)."""
        try:
            self._stop_uploader(grace_s)
        finally:
            self._unlock()

    def close(self, grace_s: float = 5.0) -> None:
        """The same as `stop()`."""
        self.stop(grace_s)

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _unlock(self) -> None:
        lock_file, self._lock_file = self._lock_file, None
        if lock_file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)
            lock_file.close()

    def _stop_uploader(self, grace_s: float) -> None:
        thread = self._thread
        if thread is None:
            return
        self.flush(grace_s)
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        thread.join(timeout=max(1.0, grace_s))
        if thread.is_alive():
            log.warning("spool uploader still busy after %.1f s; its item stays spooled", grace_s)
        self._thread = None
        with self._lock:
            left = len(self._queue)
        if left:
            log.info("spool stopped with %d item(s) kept in %s for the next start", left, self._ready)

    def flush(self, timeout: float) -> bool:
        """Wait until nothing is queued or being uploaded (True), at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while self._queue or self._inflight is not None:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._wake.wait(min(left, 0.2))
        return True

    def pending(self) -> list[SpoolItem]:
        with self._lock:
            return list(self._queue)

    # -- adding -----------------------------------------------------------------------------------
    def put_bytes(
        self,
        kind: Kind,
        key: str,
        data: bytes,
        content_type: str,
        *,
        alert_id: str,
        camera_id: str,
        tags: Mapping[str, str] | None = None,
        duration_s: float | None = None,
        clip_id: str | None = None,
        sequence: int | None = None,
    ) -> SpoolItem | None:
        """Spool `data` for `key`; None (logged, counted) when the local disk cannot take it."""

        def write(out: Any) -> str:
            out.write(data)
            return hashlib.sha256(data).hexdigest()

        extra = _Extra(duration_s, clip_id, sequence)
        return self._put(kind, key, len(data), write, content_type, alert_id, camera_id, tags, extra)

    def put_file(
        self,
        kind: Kind,
        key: str,
        source: Path,
        content_type: str,
        *,
        alert_id: str,
        camera_id: str,
        tags: Mapping[str, str] | None = None,
        duration_s: float | None = None,
        clip_id: str | None = None,
        sequence: int | None = None,
    ) -> SpoolItem | None:
        """Copy `source` into the spool (the caller removes it); None (logged, counted) on a disk problem."""
        try:
            size = source.stat().st_size
        except OSError as exc:
            self._write_failed(key, alert_id, camera_id, exc)
            return None

        def write(out: Any) -> str:
            digest = hashlib.sha256()
            with open(source, "rb") as src:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            return digest.hexdigest()

        extra = _Extra(duration_s, clip_id, sequence)
        return self._put(kind, key, size, write, content_type, alert_id, camera_id, tags, extra)

    def _put(
        self,
        kind: Kind,
        key: str,
        size: int,
        write: Callable[[Any], str],
        content_type: str,
        alert_id: str,
        camera_id: str,
        tags: Mapping[str, str] | None,
        extra: _Extra,
    ) -> SpoolItem | None:
        if self._lock_file is None:
            self._write_failed(
                key, alert_id, camera_id, OSError(errno.EBADF, f"the spool on {self.directory} is stopped")
            )
            return None
        if size > self.quota_bytes:
            self._write_failed(
                key, alert_id, camera_id, OSError(errno.EFBIG, f"{size} bytes exceed the spool quota")
            )
            return None
        with self._lock:
            self._seq += 1
            seq = self._seq
            evicted = self._make_room(size)
            self._reserved += size
        for item in evicted:
            self._evicted(item)
        item = SpoolItem(
            seq=seq,
            id=f"{alert_id}.{kind}" if extra.sequence is None else f"{alert_id}.{kind}-{extra.sequence}",
            kind=kind,
            key=key,
            content_type=content_type,
            tags=dict(tags or {}),
            sha256="",
            size=size,
            created_at=datetime.now(UTC).isoformat(),
            alert_id=alert_id,
            camera_id=camera_id,
            duration_s=extra.duration_s,
            clip_id=extra.clip_id,
            sequence=extra.sequence,
        )
        data_tmp = self._tmp / item.name
        side_tmp = self._tmp / f"{item.name}.json"
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
            self._ready.mkdir(parents=True, exist_ok=True)
            with open(data_tmp, "wb") as out:
                digest = write(out)
                out.flush()
                os.fsync(out.fileno())
            written = data_tmp.stat().st_size
            if written != size:
                raise OSError(errno.EIO, f"wrote {written} bytes, expected {size} (source changed?)")
            item = _replace(item, sha256=digest, path=self._ready / item.name)
            with open(side_tmp, "w", encoding="utf-8") as out:
                json.dump(item.sidecar(), out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(data_tmp, item.path)
            os.replace(side_tmp, self._ready / f"{item.name}.json")  # the commit
            _fsync_dir(self._ready)
        except OSError as exc:
            for leftover in (data_tmp, side_tmp, self._ready / item.name):
                with contextlib.suppress(OSError):
                    leftover.unlink(missing_ok=True)
            with self._lock:
                self._reserved -= size
            self._write_failed(key, alert_id, camera_id, exc)
            return None
        with self._wake:
            self._reserved -= size
            _insert(self._queue, item)
            self._count()
            self._wake.notify_all()
        return item

    def _make_room(self, size: int) -> list[SpoolItem]:
        """Under the lock: take the oldest ready items off the queue until `size` more bytes fit."""
        evicted: list[SpoolItem] = []
        used = sum(i.size for i in self._queue) + self._reserved
        for item in list(self._queue):
            if used + size <= self.quota_bytes:
                break
            if item is self._inflight:
                continue
            self._queue.remove(item)
            used -= item.size
            evicted.append(item)
        self._count()
        return evicted

    def _evicted(self, item: SpoolItem) -> None:
        _remove_item(item)
        with self._lock:
            self.stats.evictions += 1
        log.warning(
            "spool quota (%.1f MiB) reached: evicted %s %s of alert %s (camera %s, spooled %s)",
            self.quota_bytes / (1024 * 1024),
            item.kind,
            item.key,
            item.alert_id,
            item.camera_id,
            item.created_at,
        )
        _call(self.on_evicted, item)

    def _write_failed(self, key: str, alert_id: str, camera_id: str, exc: OSError) -> None:
        with self._lock:
            self.stats.write_failures += 1
        why = "disk full" if exc.errno == errno.ENOSPC else "disk error"
        log.error("spool: %s, %s of alert %s (camera %s) not spooled: %s", why, key, alert_id, camera_id, exc)

    def _count(self) -> None:
        self.stats.items = len(self._queue)
        self.stats.bytes = sum(i.size for i in self._queue)

    # -- rescan -----------------------------------------------------------------------------------
    def _rescan(self) -> None:
        for d in (self._tmp, self._ready, self._failed):
            d.mkdir(parents=True, exist_ok=True)
        for leftover in self._tmp.iterdir():
            log.info("spool: removing %s left by an interrupted write", leftover.name)
            with contextlib.suppress(OSError):
                leftover.unlink()
        items: list[SpoolItem] = []
        top = 0
        for path in sorted(self._ready.iterdir()):
            match = _NAME.fullmatch(path.name.removesuffix(".json"))
            if match:
                top = max(top, int(match.group(1)))
            if path.suffix == ".json":
                continue
            sidecar = path.with_name(f"{path.name}.json")
            if not sidecar.exists():
                log.warning("spool: removing %s (its write was interrupted before the commit)", path.name)
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            try:
                item = _load(sidecar, path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("spool: %s has an unreadable sidecar (%s): moved to failed/", path.name, exc)
                for p in (path, sidecar):
                    with contextlib.suppress(OSError):
                        os.replace(p, self._failed / p.name)
                continue
            items.append(item)
        for path in self._ready.glob("*.json"):
            if not path.with_name(path.stem).exists():
                with contextlib.suppress(OSError):
                    path.unlink()
        for path in self._failed.iterdir():
            match = _NAME.fullmatch(path.name.removesuffix(".json"))
            if match:
                top = max(top, int(match.group(1)))
        with self._lock:
            self._seq = max(self._seq, top)
            self._queue = sorted(items, key=lambda i: i.seq)
            self._count()
        if items:
            log.info(
                "spool: %d item(s), %d bytes re-queued from %s", len(items), self.stats.bytes, self._ready
            )

    # -- uploading --------------------------------------------------------------------------------
    def _run(self) -> None:
        self._prepare_store()
        delay = self.retry_initial_s
        mismatches = 0
        while True:
            with self._wake:
                while not self._queue and not self._stopping.is_set():
                    self._wake.wait(1.0)
                if self._stopping.is_set():
                    return
                item = self._queue[0]
                self._inflight = item
            outcome = self._upload(item)
            if outcome == "verify-mismatch":
                mismatches += 1
                outcome = "permanent" if mismatches >= _MAX_MISMATCHES else "retry"
            if outcome == "retry":
                with self._wake:
                    self._inflight = None
                    self._wake.notify_all()
                if self._stopping.wait(delay):
                    return
                delay = min(delay * 2, self.retry_max_s)
                continue
            delay = self.retry_initial_s
            mismatches = 0
            if outcome == "stored" and self._stopping.is_set():
                # Stopped while uploading (past the grace time): the database may be closed already, so
                # keep the item; the next start uploads it again (same key, same bytes) and records it.
                with self._wake:
                    self._inflight = None
                    self._wake.notify_all()
                return
            with self._wake:
                if item in self._queue:
                    self._queue.remove(item)
                self._count()
            if outcome == "stored":
                _call(self.on_stored, item)
                _remove_item(item)
            else:
                self._move_to_failed(item)
                _call(self.on_failed, item)
            with self._wake:
                self._inflight = None
                self._wake.notify_all()

    def _prepare_store(self) -> None:
        try:
            self.store.ensure_bucket()
            self._bucket_ready = True
        except StorageError as exc:
            # A permanent answer (e.g. keys without CreateBucket permission): assume the bucket is there;
            # a NoSuchBucket answer to an upload brings us back here.
            self._bucket_ready = not exc.retryable
            log.warning("spool: cannot make sure bucket %s exists: %s", self.store.bucket, exc)
            return
        keys = {i.key for i in self.pending()}
        older = datetime.now(UTC) - timedelta(seconds=self.stale_upload_s)
        try:
            aborted = self.store.abort_incomplete_uploads(_PREFIXES, keys=keys, initiated_before=older)
        except StorageError as exc:
            log.warning("spool: cannot list incomplete multipart uploads: %s", exc)
            return
        if aborted:
            log.info("spool: aborted %d incomplete multipart upload(s) left by an earlier run", aborted)

    def _upload(self, item: SpoolItem) -> str:
        """One attempt: "stored", "retry", "verify-mismatch" or "permanent"."""
        try:
            local = _sha256_file(item.path)
        except OSError as exc:
            self._permanent(item, f"cannot read the spooled file: {exc}")
            return "permanent"
        if local != item.sha256:
            self._permanent(
                item, f"the spooled file changed on disk (sha256 {local}, expected {item.sha256})"
            )
            return "permanent"
        if not self._bucket_ready:
            self._prepare_store()
        try:
            self.store.put_file(
                item.key,
                item.path,
                item.content_type,
                tags=dict(item.tags) or None,
                metadata={"sha256": item.sha256},
                part_size=self.part_size,
            )
            remote = self.store.sha256_of(item.key)
        except StorageError as exc:
            if exc.retryable or exc.code == "NoSuchBucket":
                self.stats.upload_failures += 1
                if exc.code == "NoSuchBucket":
                    self._bucket_ready = False
                log.warning(
                    "spool: upload of %s (alert %s) failed, retrying (%d queued): %s",
                    item.key,
                    item.alert_id,
                    self.stats.items,
                    exc,
                )
                return "retry"
            self._permanent(item, str(exc))
            return "permanent"
        except OSError as exc:
            self._permanent(item, f"cannot read the spooled file: {exc}")
            return "permanent"
        if remote != item.sha256:
            self.stats.upload_failures += 1
            log.error(
                "spool: %s (alert %s) read back with sha256 %s, expected %s: uploading again",
                item.key,
                item.alert_id,
                remote,
                item.sha256,
            )
            return "verify-mismatch"
        self.stats.uploads += 1
        log.debug("spool: %s stored (%d bytes, sha256 %s)", item.key, item.size, item.sha256)
        return "stored"

    def _permanent(self, item: SpoolItem, reason: str) -> None:
        self.stats.upload_failures += 1
        self.stats.permanent_failures += 1
        log.error(
            "spool: %s of alert %s (camera %s) cannot be uploaded to %s: %s; kept in %s",
            item.kind,
            item.alert_id,
            item.camera_id,
            item.key,
            reason,
            self._failed,
        )

    def _move_to_failed(self, item: SpoolItem) -> None:
        for path in (item.path, item.path.with_name(f"{item.path.name}.json")):
            with contextlib.suppress(OSError):
                os.replace(path, self._failed / path.name)


def _lock_directory(directory: Path) -> IO[str]:
    """Create `directory` and take the exclusive lock on its lock file, writing our pid into it.

    flock locks belong to the open file description, so a second open of the file, even in this process,
    conflicts; the lock goes when the file is closed (also when the Spool is garbage-collected) or the
    process ends."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    lock_file = open(path, "a+", encoding="ascii")  # noqa: SIM115 - held open for the spool's lifetime
    try:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.seek(0)
        holder = lock_file.read(32).strip() or "unknown"
        lock_file.close()
        if holder == str(os.getpid()):
            holder += " (this process)"
        raise SpoolLocked(directory, holder) from None
    except BaseException:
        lock_file.close()
        raise
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(f"{os.getpid()}\n")
    lock_file.flush()
    return lock_file


def _insert(queue: list[SpoolItem], item: SpoolItem) -> None:
    index = len(queue)
    while index > 0 and queue[index - 1].seq > item.seq:
        index -= 1
    queue.insert(index, item)


def _replace(item: SpoolItem, **changes: Any) -> SpoolItem:
    values = {name: getattr(item, name) for name in SpoolItem.__dataclass_fields__}
    values.update(changes)
    return SpoolItem(**values)


def _load(sidecar: Path, path: Path) -> SpoolItem:
    data = json.loads(sidecar.read_text(encoding="utf-8"))
    data.pop("version", None)
    item = SpoolItem(**data, path=path)
    if item.kind not in KINDS or not item.key or len(item.sha256) != 64:
        raise ValueError("not a spool sidecar")
    size = path.stat().st_size
    if size != item.size:
        raise ValueError(f"the file has {size} bytes, the sidecar says {item.size}")
    return item


def _remove_item(item: SpoolItem) -> None:
    # Sidecar first: a data file without its sidecar is cleaned up at the next start.
    for path in (item.path.with_name(f"{item.path.name}.json"), item.path):
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _call(callback: Callback, item: SpoolItem) -> None:
    try:
        callback(item)
    except Exception:
        log.exception("spool callback for %s (alert %s) failed", item.key, item.alert_id)
