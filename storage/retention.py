"""Retention: our own sweeper deletes old alerts with their clips and snapshots.

Server lifecycle rules are not enforced reliably, and they cannot keep database rows and objects consistent,
so GridWatch deletes what it no longer keeps itself, by two rules, age first:

- by age: every alert older than its label's limit (`max_age_days`, else `default_max_age_days`);
- by size: while the stored total is above `max_total_gb`, the oldest alerts go first, whatever their label.

Order of a deletion, and why it is the safe one: the alert's objects first (every clip row's key, which
covers continuation clips; the alert's clip, snapshot and thumbnail keys; and the keys the layout gives its
camera, date and id, in case an upload landed before its key was recorded), then its rows and audit entry in
one transaction. A crash in between leaves a row whose objects are gone: its clip link 404s until the next
sweep, which selects the same alert again (it is still older than its limit, or still the oldest and still
counted in the recorded total), finds its objects already gone (not an error) and deletes the row. The other
order would leave, after a crash, objects nothing refers to: never swept, never counted, space lost for good.
An object delete that fails keeps the row (and the objects not yet deleted) for the next sweep; after
`_MAX_STORE_FAILURES` retryable failures in a row the store is taken to be unreachable and the sweep stops.

Neither rule deletes an alert something of which is on its way to the store through a spool: a clip row
"pending" or "spooled", or a snapshot or thumbnail marked pending (`*_pending_since`, set by the pipeline
before it spools an image, cleared when the upload is confirmed or given up: evicted, refused). Deleting
one would let the spool upload, after the outage, an object no row points to (never swept, never counted).
The size rule also keeps alerts whose clip summary is still "pending" (their first clip being recorded: the
newest alerts). The age rule does not: minutes after the alert a first clip has a row or has failed, so an
alert past its age limit with a "pending" summary and no clip on its way had its worker die while recording,
and nothing will come. `MetadataDB.list_alerts_oldest(unspooled_only=True)` (age) and `settled_only=True`
(size) leave those alerts out in the query; they are counted in the report (`skipped_by_age`,
`skipped_by_size`) and logged, and go at a later sweep once their uploads are settled. (A worker killed
between writing a clip row or an image mark and spooling the file leaves that alert kept for good, and
reported at every sweep.)

The stored total is what the database records: `size_bytes` of the clip rows that are "stored", plus the
recorded size of each stored snapshot and thumbnail (`snapshot_bytes` / `thumbnail_bytes` of the alert,
migration 0005); images stored before sizes were recorded count at the policy's `snapshot_bytes` /
`thumbnail_bytes` estimates. Clips an alert refers to only through its clip key, without a clip row, are not
counted.

Work per sweep is bounded: candidates come `batch_size` at a time (keyset paging, each alert deleted in its
own short transaction), at most `max_alerts_per_sweep` per sweep; a sweep that stopped there says `more`,
and the background thread sweeps again at once instead of waiting the interval. Several processes may sweep
the same database: deleting objects is idempotent, and an alert another sweeper deleted first is skipped
(no second audit entry); running the sweeper in one process saves the double work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType, TracebackType
from typing import Literal

from storage.metadata import AlertRecord, DeletedAlert, MetadataDB
from storage.objectstore import ObjectStore, StorageError, clip_key, snapshot_key, thumbnail_key

__all__ = ["AUDIT_ACTION", "AUDIT_ACTOR", "RetentionPolicy", "RetentionSweeper", "SweepReport"]

log = logging.getLogger(__name__)

AUDIT_ACTOR = "retention"
AUDIT_ACTION = "deleted"
Reason = Literal["age", "size"]
_GIB = 1024**3
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"})
_MAX_STORE_FAILURES = 3  # retryable object-delete failures in a row: the store is unreachable, stop the sweep
_AGAIN_S = 1.0  # pause before the next sweep when the last one stopped at max_alerts_per_sweep


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """What to keep. Ages in days (fractions allowed); `max_total_gb` in GiB, None for no size limit."""

    max_age_days: Mapping[str, float] = field(default_factory=dict)  # per label, e.g. {"fire": 365}
    default_max_age_days: float = 30.0  # labels not in max_age_days
    max_total_gb: float | None = None  # clips + snapshots + thumbnails; None: no size limit
    interval_s: float = 3600.0  # between background sweeps
    snapshot_bytes: int = 200_000  # what a stored snapshot without a recorded size counts for (before 0005)
    thumbnail_bytes: int = 20_000  # the same for a thumbnail
    batch_size: int = 500  # candidates per query
    max_alerts_per_sweep: int = 5000

    def __post_init__(self) -> None:
        ages = dict(self.max_age_days)
        for label, days in [*ages.items(), ("(default)", self.default_max_age_days)]:
            if not label or not days > 0:
                raise ValueError(f"max age of {label!r} must be > 0 days, got {days!r}")
        if self.max_total_gb is not None and not self.max_total_gb > 0:
            raise ValueError(f"max_total_gb must be > 0 or None (no limit), got {self.max_total_gb!r}")
        if not self.interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {self.interval_s!r}")
        if self.snapshot_bytes < 0 or self.thumbnail_bytes < 0:
            raise ValueError(
                f"image estimates must be >= 0, got {self.snapshot_bytes!r}, {self.thumbnail_bytes!r}"
            )
        if not 1 <= self.batch_size <= 1000:
            raise ValueError(f"batch_size must be 1..1000, got {self.batch_size!r}")
        if self.max_alerts_per_sweep < 1:
            raise ValueError(f"max_alerts_per_sweep must be >= 1, got {self.max_alerts_per_sweep!r}")
        object.__setattr__(self, "max_age_days", MappingProxyType(ages))

    def max_age(self, label: str) -> timedelta:
        return timedelta(days=self.max_age_days.get(label, self.default_max_age_days))

    @property
    def max_total_bytes(self) -> int | None:
        return None if self.max_total_gb is None else int(self.max_total_gb * _GIB)


@dataclass(frozen=True, slots=True)
class SweepReport:
    at: datetime  # the sweep's "now"
    deleted_by_age: int
    deleted_by_size: int
    objects_deleted: int  # object keys the deleted alerts' rows referred to
    bytes_freed: int  # clip, snapshot and thumbnail bytes of the deleted alerts (estimates where unknown)
    errors: int  # alerts kept because an object could not be deleted (the next sweep retries)
    last_error: str | None
    stored_bytes: int | None  # the recorded total after the sweep; None without a size limit
    more: bool  # stopped at max_alerts_per_sweep: work is left, sweep again soon
    duration_s: float
    # Alerts a rule would have deleted, kept because something of theirs may still land in the store (a clip,
    # snapshot or thumbnail not yet stored): by age, those past their limit; by size, those older than where
    # the size rule stopped (all of them if it found nothing else to delete). One alert may count for both.
    skipped_by_age: int = 0
    skipped_by_size: int = 0

    @property
    def deleted(self) -> int:
        return self.deleted_by_age + self.deleted_by_size


@dataclass(slots=True)
class _Tally:
    by_age: int = 0
    by_size: int = 0
    objects: int = 0
    freed: int = 0
    errors: int = 0
    last_error: str | None = None
    store_failures: int = 0  # retryable failures in a row
    budget_hit: bool = False
    skipped_by_age: int = 0
    skipped_by_size: int = 0

    @property
    def deleted(self) -> int:
        return self.by_age + self.by_size


class RetentionSweeper:
    """Applies a `RetentionPolicy` to the metadata database and the object store.

    `sweep_once(now)` runs one sweep and reports it; `start()`/`stop()` run sweeps every `interval_s` on a
    background thread (also as a context manager). Errors in a background sweep are logged, not raised.
    """

    def __init__(
        self,
        db: MetadataDB,
        store: ObjectStore,
        policy: RetentionPolicy,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.store = store
        self.policy = policy
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_report: SweepReport | None = None
        # Since start, for metrics: sweeps, deleted_by_age, deleted_by_size, bytes_freed, errors, and
        # skipped_by_age / skipped_by_size (alerts kept for evidence on its way, counted at every sweep).
        self.totals: Counter[str] = Counter()

    # -- one sweep ------------------------------------------------------------------------------
    def sweep_once(self, now: datetime | None = None) -> SweepReport:
        now = self._clock() if now is None else now
        if now.tzinfo is None:
            raise ValueError("now must be a timezone-aware datetime")
        started = time.perf_counter()
        tally = _Tally()
        labels = tuple(self.policy.max_age_days)
        for label in labels:
            self._sweep_age(now, tally, label=label)
        self._sweep_age(now, tally, other_than=labels)
        stored = self._sweep_size(now, tally) if self.policy.max_total_bytes is not None else None
        report = SweepReport(
            at=now,
            deleted_by_age=tally.by_age,
            deleted_by_size=tally.by_size,
            objects_deleted=tally.objects,
            bytes_freed=tally.freed,
            errors=tally.errors,
            last_error=tally.last_error,
            stored_bytes=stored,
            more=tally.budget_hit,
            duration_s=time.perf_counter() - started,
            skipped_by_age=tally.skipped_by_age,
            skipped_by_size=tally.skipped_by_size,
        )
        self.last_report = report
        self.totals.update(
            sweeps=1,
            deleted_by_age=report.deleted_by_age,
            deleted_by_size=report.deleted_by_size,
            bytes_freed=report.bytes_freed,
            errors=report.errors,
            skipped_by_age=report.skipped_by_age,
            skipped_by_size=report.skipped_by_size,
        )
        self._log_summary(report)
        return report

    def _halted(self, tally: _Tally) -> bool:
        if tally.deleted >= self.policy.max_alerts_per_sweep:
            tally.budget_hit = True
        return tally.budget_hit or tally.store_failures >= _MAX_STORE_FAILURES or self._stop.is_set()

    def _sweep_age(
        self, now: datetime, tally: _Tally, *, label: str | None = None, other_than: tuple[str, ...] = ()
    ) -> None:
        days = self.policy.max_age_days[label] if label is not None else self.policy.default_max_age_days
        cutoff = now - timedelta(days=days)
        skipped = self.db.count_alerts_in_flight(
            before=cutoff, label=label, other_than=other_than, spooling_only=True
        )
        if skipped:
            tally.skipped_by_age += skipped
            log.info(
                "retention: %d alert(s) of %s past %g days kept: a clip, snapshot or thumbnail of theirs is "
                "not stored yet",
                skipped,
                repr(label) if label is not None else "other labels",
                days,
            )
        after: tuple[datetime, str] | None = None
        while not self._halted(tally):
            batch = self.db.list_alerts_oldest(
                before=cutoff,
                label=label,
                other_than=other_than,
                after=after,
                unspooled_only=True,
                limit=self.policy.batch_size,
            )
            for alert in batch:
                if self._halted(tally):
                    return
                self._delete(alert, "age", now, tally)
            if len(batch) < self.policy.batch_size:
                return
            after = (batch[-1].created_at, batch[-1].id)
            self._log_progress(tally)

    def _sweep_size(self, now: datetime, tally: _Tally) -> int:
        limit = self.policy.max_total_bytes
        assert limit is not None
        total = self._stored_bytes()
        if total <= limit:
            return total
        after: tuple[datetime, str] | None = None
        ran_dry = False
        while total > limit and not self._halted(tally):
            batch = self.db.list_alerts_oldest(after=after, settled_only=True, limit=self.policy.batch_size)
            if not batch:
                ran_dry = True
                if not tally.errors:
                    log.warning(
                        "retention: %d bytes stored, above the limit of %d, and no stored alert to delete",
                        total,
                        limit,
                    )
                break
            for alert in batch:
                if total <= limit or self._halted(tally):
                    break
                freed = self._delete(alert, "size", now, tally)
                if freed is not None:
                    total -= freed
                after = (alert.created_at, alert.id)
            if total > limit:
                self._log_progress(tally)
                total = self._stored_bytes()  # clips stored meanwhile count too
        # the alerts on their way that the rule passed over: older than where it stopped, or all of them
        skipped = self.db.count_alerts_in_flight(before=None if ran_dry or after is None else after[0])
        if skipped:
            tally.skipped_by_size += skipped
            log.info(
                "retention: %d alert(s) among the oldest kept above the size limit: a clip, snapshot or "
                "thumbnail of theirs is not stored yet",
                skipped,
            )
        return self._stored_bytes()

    def _stored_bytes(self) -> int:
        images = self.db.stored_image_bytes(
            snapshot_estimate=self.policy.snapshot_bytes, thumbnail_estimate=self.policy.thumbnail_bytes
        )
        return self.db.stored_clip_bytes() + images

    # -- one alert ------------------------------------------------------------------------------
    def _delete(self, alert: AlertRecord, reason: Reason, now: datetime, tally: _Tally) -> int | None:
        """Objects, then rows; the bytes freed, or None if the alert was kept (or already gone)."""
        referred = [c.object_key for c in self.db.list_clips(alert.id)]
        referred += [k for k in (alert.clip_key, alert.snapshot_key, alert.thumbnail_key) if k]
        referred = list(dict.fromkeys(referred))
        for key in [*referred, *(k for k in _layout_keys(alert) if k not in referred)]:
            if not self._delete_object(alert, key, tally):
                return None
        tally.store_failures = 0
        age_days = (now - alert.created_at).total_seconds() / 86_400
        deleted = self.db.delete_alert_audited(
            alert.id,
            actor=AUDIT_ACTOR,
            action=AUDIT_ACTION,
            details={"label": alert.label, "age_days": round(age_days, 3), "reason": reason},
            at=now,
        )
        if deleted is None:
            return None  # another sweeper deleted it first
        for key in deleted.object_keys:
            # a continuation clip recorded between our look and the delete: its row is gone, so best effort
            if key not in referred and not self._delete_object(alert, key, tally):
                log.error("retention: object %s of deleted alert %s is left in the store", key, alert.id)
        if reason == "age":
            tally.by_age += 1
        else:
            tally.by_size += 1
        freed = deleted.clip_bytes + self._image_bytes(deleted)
        tally.objects += len(deleted.object_keys)
        tally.freed += freed
        log.debug(
            "retention: deleted alert %s (%s, %.1f days, by %s)", alert.id, alert.label, age_days, reason
        )
        return freed

    def _image_bytes(self, deleted: DeletedAlert) -> int:
        """The recorded sizes of the deleted alert's stored images, estimates for those not recorded."""
        total = 0
        for key, size, estimate in (
            (deleted.snapshot_key, deleted.snapshot_bytes, self.policy.snapshot_bytes),
            (deleted.thumbnail_key, deleted.thumbnail_bytes, self.policy.thumbnail_bytes),
        ):
            if key:
                total += estimate if size is None else size
        return total

    def _delete_object(self, alert: AlertRecord, key: str, tally: _Tally) -> bool:
        try:
            self.store.delete(key)
        except StorageError as exc:
            if exc.code in _MISSING_CODES:
                return True  # already gone
            tally.errors += 1
            tally.last_error = str(exc)
            if exc.retryable:
                tally.store_failures += 1
            log.warning(
                "retention: alert %s kept, its object %s could not be deleted (%s): %s",
                alert.id,
                key,
                "will retry" if exc.retryable else "permanent",
                exc,
            )
            return False
        return True

    # -- logging --------------------------------------------------------------------------------
    def _log_progress(self, tally: _Tally) -> None:
        if tally.deleted:
            log.info(
                "retention: %d alerts deleted so far (%d by age, %d by size), %.1f MB freed",
                tally.deleted,
                tally.by_age,
                tally.by_size,
                tally.freed / 1e6,
            )

    def _log_summary(self, report: SweepReport) -> None:
        stored = "" if report.stored_bytes is None else f", {report.stored_bytes / _GIB:.2f} GiB stored"
        log.log(
            logging.WARNING if report.errors else logging.INFO,
            "retention sweep: %d alerts deleted (%d by age, %d by size), %d objects, %.1f MB freed, "
            "%d errors%s%s in %.1f s%s",
            report.deleted,
            report.deleted_by_age,
            report.deleted_by_size,
            report.objects_deleted,
            report.bytes_freed / 1e6,
            report.errors,
            stored,
            (
                f", kept with evidence not yet stored: {report.skipped_by_age} past their age, "
                f"{report.skipped_by_size} for size"
                if report.skipped_by_age or report.skipped_by_size
                else ""
            ),
            report.duration_s,
            "; more to do, sweeping again" if report.more else "",
        )

    # -- background thread ----------------------------------------------------------------------
    def start(self) -> None:
        """Sweep now and then every `interval_s` on a daemon thread until `stop()`."""
        if self._thread is not None:
            raise RuntimeError("the retention sweeper is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the alert being deleted (a sweep checks between alerts)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("retention: the sweeper thread did not stop within %.0f s", timeout)
                return
            self._thread = None
        self._stop.clear()  # a later sweep_once() by hand runs in full

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = self.policy.interval_s
            try:
                if self.sweep_once().more:
                    wait = _AGAIN_S
            except Exception:
                log.exception("retention sweep failed; trying again in %.0f s", wait)
            self._stop.wait(wait)

    def __enter__(self) -> RetentionSweeper:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _layout_keys(alert: AlertRecord) -> list[str]:
    """The keys ARCHITECTURE.md's layout gives the alert's first clip, its snapshot and its thumbnail."""
    try:
        return [
            key(alert.camera_id, alert.created_at, alert.id)
            for key in (clip_key, snapshot_key, thumbnail_key)
        ]
    except ValueError:  # an id the layout cannot hold: nothing was stored under it
        return []
