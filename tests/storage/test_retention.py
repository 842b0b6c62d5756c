"""The retention sweeper against the real SeaweedFS (`s3_server`) and both databases (`db`)."""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from gridwatch.services import S3Server, free_port
from gridwatch.settings import RetentionSettings
from storage.metadata import AlertRecord, ClipFacts, MetadataDB, new_alert_id
from storage.objectstore import ObjectStore, StorageError, clip_key, snapshot_key, thumbnail_key
from storage.retention import RetentionPolicy, RetentionSweeper
from storage.spool import Spool, SpoolItem

NOW = datetime(2024, 9, 1, 12, 0, tzinfo=UTC)
SNAPSHOT = 1_000  # bytes of every test snapshot, and what the policies count a snapshot for


@pytest.fixture
def store(s3_server: S3Server, s3_keys: tuple[str, str]) -> Iterator[ObjectStore]:
    access, secret = s3_keys
    s = ObjectStore(s3_server.endpoint, access, secret, f"gw-{uuid.uuid4().hex[:12]}")
    s.ensure_bucket()
    yield s
    s.close()


@pytest.fixture
def dead_store(s3_keys: tuple[str, str]) -> Iterator[ObjectStore]:
    """The same kind of store on a port where nothing listens: every request fails (retryable)."""
    access, secret = s3_keys
    s = ObjectStore(f"127.0.0.1:{free_port()}", access, secret, "gw-dead", timeout=1.0)
    yield s
    s.close()


@dataclass(frozen=True)
class Stored:
    alert: AlertRecord
    keys: tuple[str, ...]  # every object uploaded for it
    clip_bytes: int


def _policy(**overrides: object) -> RetentionPolicy:
    values: dict[str, object] = {"default_max_age_days": 10_000.0, "snapshot_bytes": SNAPSHOT}
    values.update(overrides)
    return RetentionPolicy(**values)  # type: ignore[arg-type]


def _stored_alert(
    db: MetadataDB,
    store: ObjectStore,
    age: timedelta,
    *,
    label: str = "person",
    clip_sizes: tuple[int, ...] = (10_000,),
    snapshot: bool = True,
    clip_status: str = "stored",
    snapshot_size: int = SNAPSHOT,
    thumbnail_size: int | None = None,
    record_sizes: bool = False,
) -> Stored:
    """An alert with real objects in the store, recorded as the recorder and spool record them.

    `record_sizes`: the image sizes go into the row (as from migration 0005 on); else they are unknown, as
    for images stored before."""
    created = NOW - age
    alert = AlertRecord(
        id=new_alert_id(),
        camera_id="cam-01",
        village="v01",
        grid="g0101",
        label=label,
        score=0.9,
        bbox=(1.0, 2.0, 3.0, 4.0),
        created_at=created,
        frame_time=created,
    )
    db.add_alert(alert)
    keys: list[str] = []
    first = clip_key(alert.camera_id, created, alert.id)
    for sequence, size in enumerate(clip_sizes):
        key = first if sequence == 0 else first.replace(".mp4", f"-{sequence}.mp4")
        data = os.urandom(size)
        facts = ClipFacts(created, 30.0, size, hashlib.sha256(data).hexdigest(), "h264")
        if clip_status == "stored":
            store.put_bytes(key, data, "video/mp4")
            keys.append(key)
            db.add_clip(alert.id, key, sequence=sequence, status="stored", facts=facts)
        else:
            db.add_clip(alert.id, key, sequence=sequence, status="spooled", facts=facts)
    if clip_sizes and clip_status == "stored":
        db.set_clip(alert.id, key=first, status="stored", duration_s=30.0)
    if snapshot:
        key = snapshot_key(alert.camera_id, created, alert.id)
        store.put_bytes(key, os.urandom(snapshot_size), "image/jpeg")
        db.set_snapshot(alert.id, key, size_bytes=snapshot_size if record_sizes else None)
        keys.append(key)
    if thumbnail_size is not None:
        key = thumbnail_key(alert.camera_id, created, alert.id)
        store.put_bytes(key, os.urandom(thumbnail_size), "image/jpeg")
        db.set_thumbnail(alert.id, key, size_bytes=thumbnail_size if record_sizes else None)
        keys.append(key)
    record = db.get_alert(alert.id)
    assert record is not None
    return Stored(record, tuple(keys), sum(clip_sizes) if clip_status == "stored" else 0)


def _is_gone(db: MetadataDB, store: ObjectStore, s: Stored) -> bool:
    gone_row = db.get_alert(s.alert.id) is None and db.list_clips(s.alert.id) == []
    gone_objects = not any(store.exists(k) for k in s.keys)
    assert gone_row == gone_objects, f"row gone: {gone_row}, objects gone: {gone_objects}"
    return gone_row


def _object_bytes(store: ObjectStore, kept: list[Stored]) -> int:
    return sum(len(store.get_bytes(k)) for s in kept for k in s.keys)


# -- by age ---------------------------------------------------------------------------------------


def test_age_per_label(db: MetadataDB, store: ObjectStore) -> None:
    old_person = _stored_alert(db, store, timedelta(days=40))
    old_person_2 = _stored_alert(db, store, timedelta(days=31))
    young_person = _stored_alert(db, store, timedelta(days=10))
    old_fire = _stored_alert(db, store, timedelta(days=40), label="fire")
    older_fire = _stored_alert(db, store, timedelta(days=400), label="fire")
    old_car = _stored_alert(db, store, timedelta(days=25), label="car")  # default limit
    young_car = _stored_alert(db, store, timedelta(days=15), label="car")
    policy = _policy(max_age_days={"person": 30, "fire": 365}, default_max_age_days=20)

    report = RetentionSweeper(db, store, policy).sweep_once(NOW)

    gone = [old_person, old_person_2, older_fire, old_car]
    kept = [young_person, old_fire, young_car]
    assert [_is_gone(db, store, s) for s in gone] == [True] * 4
    assert [_is_gone(db, store, s) for s in kept] == [False] * 3
    assert (report.deleted_by_age, report.deleted_by_size, report.errors) == (4, 0, 0)
    assert report.objects_deleted == 8 and report.bytes_freed == 4 * (10_000 + SNAPSHOT)
    assert report.stored_bytes is None and not report.more

    entries = {e.target: e for e in db.list_audit(limit=100)}
    assert set(entries) == {f"alert:{s.alert.id}" for s in gone}
    entry = entries[f"alert:{old_person.alert.id}"]
    assert (entry.actor, entry.action, entry.at) == ("retention", "deleted", NOW)
    assert entry.details["label"] == "person" and entry.details["reason"] == "age"
    assert entry.details["age_days"] == pytest.approx(40)
    assert sorted(entry.details["object_keys"]) == sorted(old_person.keys)
    assert entries[f"alert:{older_fire.alert.id}"].details["label"] == "fire"


def test_continuation_clips_all_go(db: MetadataDB, store: ObjectStore) -> None:
    long_event = _stored_alert(db, store, timedelta(days=60), clip_sizes=(3_000, 2_000, 1_000))
    assert len(db.list_clips(long_event.alert.id)) == 3 and len(long_event.keys) == 4

    report = RetentionSweeper(db, store, _policy(default_max_age_days=30)).sweep_once(NOW)

    assert _is_gone(db, store, long_event)
    assert (report.deleted_by_age, report.objects_deleted, report.bytes_freed) == (1, 4, 6_000 + SNAPSHOT)
    assert db.stored_clip_bytes() == 0


def test_second_sweep_is_idempotent(db: MetadataDB, store: ObjectStore) -> None:
    old = [_stored_alert(db, store, timedelta(days=50 + i)) for i in range(3)]
    young = _stored_alert(db, store, timedelta(days=1))
    sweeper = RetentionSweeper(db, store, _policy(default_max_age_days=30, max_total_gb=1.0))

    first = sweeper.sweep_once(NOW)
    second = sweeper.sweep_once(NOW)

    assert first.deleted_by_age == 3 and all(_is_gone(db, store, s) for s in old)
    assert (second.deleted, second.objects_deleted, second.bytes_freed, second.errors) == (0, 0, 0, 0)
    assert not _is_gone(db, store, young)
    assert len(db.list_audit(limit=100)) == 3


def test_objects_already_gone_are_not_errors(db: MetadataDB, store: ObjectStore) -> None:
    """What a crash between the object deletes and the row delete leaves: the next sweep finishes."""
    half_done = _stored_alert(db, store, timedelta(days=90), clip_sizes=(4_000, 4_000))
    for key in half_done.keys:
        store.delete(key)

    report = RetentionSweeper(db, store, _policy(default_max_age_days=30)).sweep_once(NOW)

    assert (report.deleted_by_age, report.errors) == (1, 0)
    assert db.get_alert(half_done.alert.id) is None and db.list_clips(half_done.alert.id) == []


def test_objects_uploaded_before_their_key_was_recorded_go_too(db: MetadataDB, store: ObjectStore) -> None:
    """A crash between an upload and recording its key: the layout's keys are deleted as well."""
    alert = _stored_alert(db, store, timedelta(days=90), clip_sizes=(), snapshot=False).alert
    unrecorded = [
        clip_key(alert.camera_id, alert.created_at, alert.id),
        snapshot_key(alert.camera_id, alert.created_at, alert.id),
    ]
    for key in unrecorded:
        store.put_bytes(key, b"late", "application/octet-stream")

    report = RetentionSweeper(db, store, _policy(default_max_age_days=30)).sweep_once(NOW)

    assert report.deleted_by_age == 1 and db.get_alert(alert.id) is None
    assert not any(store.exists(k) for k in unrecorded)


# -- by size --------------------------------------------------------------------------------------


def test_size_deletes_oldest_first_until_under_the_limit(db: MetadataDB, store: ObjectStore) -> None:
    labels = ["fire", "person", "car", "fire", "person", "smoke"]  # any label goes, oldest first
    alerts = [_stored_alert(db, store, timedelta(hours=60 - i), label=lab) for i, lab in enumerate(labels)]
    each = 10_000 + SNAPSHOT
    assert db.stored_clip_bytes() + db.count_snapshots() * SNAPSHOT == 6 * each
    assert _object_bytes(store, alerts) == 6 * each  # what is really in the store
    limit = 40_000  # three alerts fit (33,000), four do not (44,000)
    policy = _policy(max_age_days={"fire": 365}, max_total_gb=limit / 1024**3)

    report = RetentionSweeper(db, store, policy).sweep_once(NOW)

    assert [_is_gone(db, store, s) for s in alerts] == [True, True, True, False, False, False]
    assert (report.deleted_by_age, report.deleted_by_size, report.errors) == (0, 3, 0)
    assert report.stored_bytes == 3 * each <= limit and report.bytes_freed == 3 * each
    assert _object_bytes(store, alerts[3:]) == 3 * each <= limit
    reasons = {e.target: e.details["reason"] for e in db.list_audit(limit=100)}
    assert reasons == {f"alert:{s.alert.id}": "size" for s in alerts[:3]}


def test_size_never_deletes_a_clip_still_on_its_way(db: MetadataDB, store: ObjectStore) -> None:
    spooled = _stored_alert(db, store, timedelta(hours=50), clip_status="spooled", snapshot=False)
    continuation_pending = _stored_alert(db, store, timedelta(hours=49), clip_sizes=(10_000,))
    db.add_clip(continuation_pending.alert.id, "clips/cam-01/late-1.mp4", sequence=1, status="pending")
    settled = [_stored_alert(db, store, timedelta(hours=40 - i)) for i in range(3)]
    assert db.get_alert(spooled.alert.id).clip_status == "pending"  # type: ignore[union-attr]
    policy = _policy(max_total_gb=1 / 1024**3)  # 1 byte: everything that may go, goes

    report = RetentionSweeper(db, store, policy).sweep_once(NOW)

    assert report.deleted_by_size == 3 and all(_is_gone(db, store, s) for s in settled)
    assert db.get_alert(spooled.alert.id) is not None
    assert not _is_gone(db, store, continuation_pending)
    assert report.stored_bytes == 10_000 + SNAPSHOT  # the kept one; the spooled clip is not stored yet


def test_size_counts_the_recorded_snapshot_and_thumbnail_bytes(db: MetadataDB, store: ObjectStore) -> None:
    """The stored total is what is really in the store: recorded image sizes, not the estimates (which only
    images stored before sizes were recorded count at), and thumbnails too."""
    legacy = _stored_alert(db, store, timedelta(hours=70), thumbnail_size=100)  # sizes unknown: estimates
    alerts = [
        _stored_alert(
            db, store, timedelta(hours=60 - i), snapshot_size=30_000, thumbnail_size=4_000, record_sizes=True
        )
        for i in range(4)
    ]
    each = 10_000 + 30_000 + 4_000
    policy = _policy(max_total_gb=100_000 / 1024**3, snapshot_bytes=SNAPSHOT, thumbnail_bytes=100)
    sweeper = RetentionSweeper(db, store, policy)
    assert (
        sweeper._stored_bytes()
        == _object_bytes(store, [legacy, *alerts])
        == 10_000 + SNAPSHOT + 100 + 4 * each
    )

    report = sweeper.sweep_once(NOW)

    # 187,100 bytes: the legacy alert and the two oldest go (88,000 left); with snapshots counted at the
    # 1,000-byte estimate and thumbnails not at all the total would have looked like 56,000 (nothing to do).
    assert [_is_gone(db, store, s) for s in [legacy, *alerts]] == [True, True, True, False, False]
    assert (report.deleted_by_size, report.errors) == (3, 0)
    assert report.stored_bytes == 2 * each == _object_bytes(store, alerts[2:])
    assert report.bytes_freed == 10_000 + SNAPSHOT + 100 + 2 * each == sweeper.totals["bytes_freed"]
    details = {e.target: e.details for e in db.list_audit(limit=100)}
    assert details[f"alert:{alerts[0].alert.id}"]["snapshot_bytes"] == 30_000
    assert details[f"alert:{alerts[0].alert.id}"]["thumbnail_bytes"] == 4_000
    assert details[f"alert:{legacy.alert.id}"]["snapshot_bytes"] is None  # not recorded: the estimate counted


def test_size_then_age_and_both_reasons_are_audited(db: MetadataDB, store: ObjectStore) -> None:
    ancient = _stored_alert(db, store, timedelta(days=100))
    middle = _stored_alert(db, store, timedelta(days=5))
    newest = _stored_alert(db, store, timedelta(days=1))
    policy = _policy(default_max_age_days=30, max_total_gb=(10_000 + SNAPSHOT) * 1.5 / 1024**3)

    report = RetentionSweeper(db, store, policy).sweep_once(NOW)

    assert (report.deleted_by_age, report.deleted_by_size) == (1, 1)
    assert _is_gone(db, store, ancient) and _is_gone(db, store, middle) and not _is_gone(db, store, newest)
    [by_size] = db.list_audit(target=f"alert:{middle.alert.id}")
    [by_age] = db.list_audit(target=f"alert:{ancient.alert.id}")
    assert (by_size.details["reason"], by_age.details["reason"]) == ("size", "age")


# -- failures and bounds ----------------------------------------------------------------------------


def test_store_failure_keeps_rows_and_the_next_sweep_finishes(
    db: MetadataDB, store: ObjectStore, dead_store: ObjectStore
) -> None:
    old = [_stored_alert(db, store, timedelta(days=40 + i)) for i in range(5)]
    policy = _policy(default_max_age_days=30)

    started = time.perf_counter()
    failed = RetentionSweeper(db, dead_store, policy).sweep_once(NOW)
    took = time.perf_counter() - started

    assert (failed.deleted, failed.objects_deleted, failed.bytes_freed) == (0, 0, 0)
    assert failed.errors == 3 and failed.last_error is not None  # stops after 3 failures in a row
    assert "127.0.0.1" in failed.last_error and "secret" not in failed.last_error
    assert took < 30, f"a sweep against a dead store took {took:.1f} s"
    assert not any(_is_gone(db, store, s) for s in old)  # rows and objects all still there
    assert db.list_audit() == []

    done = RetentionSweeper(db, store, policy).sweep_once(NOW)

    assert (done.deleted_by_age, done.errors) == (5, 0)
    assert all(_is_gone(db, store, s) for s in old)


class _FlakyStore(ObjectStore):
    """The real store, but deleting the keys in `refuse` fails, and `on_delete` runs before each delete."""

    def __init__(self, real: ObjectStore, s3_keys: tuple[str, str], retryable: bool = True) -> None:
        super().__init__(real.endpoint, s3_keys[0], s3_keys[1], real.bucket)
        self.refuse: set[str] = set()
        self.retryable = retryable
        self.on_delete: Callable[[str], None] = lambda key: None

    def delete(self, key: str) -> None:
        self.on_delete(key)
        if key in self.refuse:
            raise StorageError(f"refused {key}", key=key, endpoint=self.endpoint, retryable=self.retryable)
        super().delete(key)


@pytest.mark.parametrize("retryable", [True, False])
def test_only_failures_in_a_row_stop_a_sweep(
    db: MetadataDB, store: ObjectStore, s3_keys: tuple[str, str], retryable: bool
) -> None:
    old = [_stored_alert(db, store, timedelta(days=60 - i)) for i in range(7)]
    flaky = _FlakyStore(store, s3_keys, retryable)
    flaky.refuse = {old[i].keys[-1] for i in (0, 2, 4, 6)}  # their snapshots: every other alert

    report = RetentionSweeper(db, flaky, _policy(default_max_age_days=30)).sweep_once(NOW)

    assert (report.deleted_by_age, report.errors) == (3, 4)
    assert [_is_gone(db, store, s) for s in old[1::2]] == [True] * 3
    for s in old[::2]:  # kept, with the objects that could not be deleted
        assert db.get_alert(s.alert.id) is not None and store.exists(s.keys[-1])


@pytest.mark.parametrize("retryable", [True, False])
def test_retryable_failures_in_a_row_stop_a_sweep(
    db: MetadataDB, store: ObjectStore, s3_keys: tuple[str, str], retryable: bool
) -> None:
    """Three retryable failures in a row: the store is unreachable, the rest waits. Permanent failures
    (refused for that object) do not say anything about the next one."""
    old = [_stored_alert(db, store, timedelta(days=60 - i)) for i in range(5)]
    flaky = _FlakyStore(store, s3_keys, retryable)
    flaky.refuse = {s.keys[0] for s in old[:4]}

    report = RetentionSweeper(db, flaky, _policy(default_max_age_days=30)).sweep_once(NOW)

    assert (report.deleted_by_age, report.errors) == ((0, 3) if retryable else (1, 4))
    assert _is_gone(db, store, old[4]) is not retryable


def test_a_crash_between_objects_and_rows_heals_at_the_next_sweep(
    db: MetadataDB, store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    long_event = _stored_alert(db, store, timedelta(days=60), clip_sizes=(3_000, 2_000, 1_000))
    thumb = thumbnail_key(long_event.alert.camera_id, long_event.alert.created_at, long_event.alert.id)
    store.put_bytes(thumb, b"small jpeg", "image/jpeg")
    db.set_thumbnail(long_event.alert.id, thumb)
    long_event = Stored(long_event.alert, (*long_event.keys, thumb), long_event.clip_bytes)
    sweeper = RetentionSweeper(db, store, _policy(default_max_age_days=30))

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed")

    with monkeypatch.context() as patch:
        patch.setattr(db, "delete_alert_audited", crash)
        with pytest.raises(RuntimeError):
            sweeper.sweep_once(NOW)
    # objects first: every one of them (continuation clips too) is gone, the row is still there
    assert not any(store.exists(k) for k in long_event.keys)
    assert db.get_alert(long_event.alert.id) is not None and db.list_audit() == []

    report = sweeper.sweep_once(NOW)

    assert (report.deleted_by_age, report.errors) == (1, 0)
    assert db.get_alert(long_event.alert.id) is None and len(db.list_audit()) == 1


def test_a_continuation_clip_recorded_during_the_deletion_goes_too(
    db: MetadataDB, store: ObjectStore, s3_keys: tuple[str, str]
) -> None:
    s = _stored_alert(db, store, timedelta(days=60))
    late_key = clip_key(s.alert.camera_id, s.alert.created_at, s.alert.id).replace(".mp4", "-1.mp4")
    flaky = _FlakyStore(store, s3_keys)

    def record_late_clip(key: str) -> None:
        if not store.exists(late_key):  # once: while the sweeper deletes the first object
            store.put_bytes(late_key, b"late clip", "video/mp4")
            db.add_clip(s.alert.id, late_key, sequence=1, status="stored")

    flaky.on_delete = record_late_clip

    report = RetentionSweeper(db, flaky, _policy(default_max_age_days=30)).sweep_once(NOW)

    assert report.deleted_by_age == 1 and report.objects_deleted == 3
    assert _is_gone(db, store, s) and not store.exists(late_key)


def test_a_sweep_is_bounded_and_says_more(db: MetadataDB, store: ObjectStore) -> None:
    old = [
        _stored_alert(db, store, timedelta(days=40 + i), snapshot=False, clip_sizes=(100,)) for i in range(5)
    ]
    sweeper = RetentionSweeper(
        db, store, _policy(default_max_age_days=30, batch_size=2, max_alerts_per_sweep=3)
    )

    first = sweeper.sweep_once(NOW)
    assert (first.deleted_by_age, first.more) == (3, True)
    assert [_is_gone(db, store, s) for s in old] == [False, False, True, True, True]  # oldest first
    second = sweeper.sweep_once(NOW)
    assert (second.deleted_by_age, second.more) == (2, False)
    assert all(_is_gone(db, store, s) for s in old)


def test_background_thread_sweeps_and_stops(
    db: MetadataDB, store: ObjectStore, caplog: pytest.LogCaptureFixture
) -> None:
    old = _stored_alert(db, store, timedelta(days=40))
    policy = _policy(default_max_age_days=30, interval_s=0.2)
    caplog.set_level(logging.INFO, logger="storage.retention")

    with RetentionSweeper(db, store, policy, clock=lambda: NOW) as sweeper:
        deadline = time.monotonic() + 20
        while db.get_alert(old.alert.id) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        late = _stored_alert(db, store, timedelta(days=35))  # a later sweep gets this one
        while db.get_alert(late.alert.id) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sweeper.last_report is not None
    started = time.monotonic()
    sweeper.stop()  # already stopped by the context manager: a no-op
    assert time.monotonic() - started < 2
    assert _is_gone(db, store, old) and _is_gone(db, store, late)
    assert any("retention sweep: 1 alerts deleted" in r.getMessage() for r in caplog.records)
    with pytest.raises(RuntimeError):
        sweeper.start()
        sweeper.start()
    sweeper.stop()


# -- policy and settings ----------------------------------------------------------------------------


def test_policy_is_validated() -> None:
    for bad in (
        {"max_age_days": {"person": 0}},
        {"max_age_days": {"": 5}},
        {"default_max_age_days": -1},
        {"max_total_gb": 0},
        {"interval_s": 0},
        {"batch_size": 5000},
    ):
        with pytest.raises(ValueError):
            RetentionPolicy(**bad)  # type: ignore[arg-type]
    ages = {"person": 30.0}
    policy = RetentionPolicy(max_age_days=ages, max_total_gb=2)
    ages["person"] = 1.0  # the policy took a copy
    assert policy.max_age("person") == timedelta(days=30) and policy.max_age("car") == timedelta(days=30)
    assert policy.max_total_bytes == 2 * 1024**3 and RetentionPolicy().max_total_bytes is None


def test_settings_validate_and_make_a_policy() -> None:
    settings = RetentionSettings(max_age_days={"person": 7, "fire": 365}, max_total_gb=500)
    policy = RetentionPolicy(**settings.model_dump(exclude={"enabled"}))
    assert policy.max_age("person") == timedelta(days=7) and policy.max_total_bytes == 500 * 1024**3
    assert RetentionPolicy(**RetentionSettings().model_dump(exclude={"enabled"})).max_total_bytes is None
    for bad in (
        {"max_age_days": {"person": 0}},
        {"default_max_age_days": 0},
        {"max_total_gb": 0},
        {"max_total_gb": -5},
        {"interval_s": 1},
        {"unknown": 1},
    ):
        with pytest.raises(ValidationError):
            RetentionSettings(**bad)  # type: ignore[arg-type]


# -- evidence still on its way ------------------------------------------------------------------------


def test_alerts_with_evidence_still_in_the_spool_are_kept_until_it_is_stored(
    db: MetadataDB, store: ObjectStore, tmp_path: Path
) -> None:
    """The store was down: a clip and a snapshot of two old alerts wait in the spool. Neither rule deletes
    those alerts (the spool would then upload objects no row points to); once the uploads are confirmed,
    the next sweep deletes them, objects and all."""
    old_clip = _stored_alert(db, store, timedelta(days=50), clip_sizes=(), snapshot=False).alert
    old_snapshot = _stored_alert(db, store, timedelta(days=49), snapshot=False).alert
    settled = _stored_alert(db, store, timedelta(days=48))
    spool = Spool(store, tmp_path / "spool", 10 * 1024 * 1024)
    try:
        key = clip_key(old_clip.camera_id, old_clip.created_at, old_clip.id)
        clip_file = tmp_path / "clip.mp4"
        clip_file.write_bytes(os.urandom(7_000))
        row = db.add_clip(old_clip.id, key, status="pending")  # as the pipeline does before it spools
        assert spool.put_file(
            "clip", key, clip_file, "video/mp4", alert_id=old_clip.id, camera_id="cam-01", clip_id=row.id
        )
        since = datetime.now(UTC)
        db.mark_image_pending(old_snapshot.id, "snapshot", since)
        image = snapshot_key(old_snapshot.camera_id, old_snapshot.created_at, old_snapshot.id)
        assert spool.put_bytes(
            "snapshot", image, os.urandom(3_000), "image/jpeg", alert_id=old_snapshot.id, camera_id="cam-01"
        )
        sweeper = RetentionSweeper(db, store, _policy(default_max_age_days=30, max_total_gb=1 / 1024**3))

        first = sweeper.sweep_once(NOW)

        assert _is_gone(db, store, settled)
        assert db.get_alert(old_clip.id) is not None and db.get_alert(old_snapshot.id) is not None
        assert (first.deleted_by_age, first.skipped_by_age, first.skipped_by_size) == (1, 2, 2)
        assert sweeper.totals["skipped_by_age"] == 2

        def stored(item: SpoolItem) -> None:  # what AlertPipeline.on_spool_stored records
            if item.kind == "clip":
                assert item.clip_id is not None
                db.update_clip(item.clip_id, "stored", facts=None)
                db.set_clip(item.alert_id, key=item.key, status="stored")
            else:
                spooled_at = datetime.fromisoformat(item.created_at)
                db.set_snapshot(item.alert_id, item.key, size_bytes=item.size, spooled_at=spooled_at)

        spool.start(on_stored=stored)
        assert spool.flush(30), spool.stats
        assert store.exists(key) and store.exists(image)
        snap = db.get_alert(old_snapshot.id)
        assert snap is not None and snap.snapshot_bytes == 3_000
    finally:
        spool.stop()

    second = sweeper.sweep_once(NOW)

    assert (second.deleted_by_age, second.skipped_by_age, second.skipped_by_size) == (2, 0, 0)
    assert db.get_alert(old_clip.id) is None and db.get_alert(old_snapshot.id) is None
    assert not store.exists(key) and not store.exists(image), "nothing is left that no row points to"
