"""MetadataDB on SQLite (a file in tmp_path) and on a real PostgreSQL cluster started for this session
(fixtures `db` / `db_url` in conftest.py)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from storage.metadata import (
    AlertRecord,
    CameraRecord,
    ClipFacts,
    EventRecord,
    GridRecord,
    MetadataDB,
    TeamRecord,
    UserRecord,
    VillageRecord,
    new_alert_id,
    new_id,
)

# -- helpers ------------------------------------------------------------------------------------

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


def _alert(created_at: datetime, **overrides: Any) -> AlertRecord:
    values: dict[str, Any] = {
        "id": new_alert_id(),
        "camera_id": "cam-01",
        "village": "v01",
        "grid": "g0101",
        "label": "person",
        "score": 0.87,
        "bbox": (10.0, 20.5, 110.0, 220.25),
        "created_at": created_at,
        "frame_time": created_at - timedelta(milliseconds=400),
    }
    values.update(overrides)
    return AlertRecord(**values)


# -- tests --------------------------------------------------------------------------------------


def test_schema_creation_is_idempotent(db: MetadataDB) -> None:
    db.create_schema()
    assert db.list_alerts() == []
    assert db.list_cameras() == []


def test_cameras_upsert_and_list(db: MetadataDB) -> None:
    cams = [
        CameraRecord("cam-02", "East gate", "v01", "g0101", "rtsp://***@10.0.0.2/s1", 2.0, True, T0),
        CameraRecord("cam-01", "Main road", "v01", "g0102", "rtsp://***@10.0.0.1/s1", 5.0, True, T0),
    ]
    db.upsert_cameras(cams)
    assert [c.id for c in db.list_cameras()] == ["cam-01", "cam-02"]
    changed = CameraRecord("cam-02", "East gate (new)", "v02", "g0201", "rtsp://10.0.0.9/", 1.0, False)
    db.upsert_cameras([changed, CameraRecord("cam-03", "Square", "v01", "g0101", "rtsp://x/", 2.0)])
    listed = {c.id: c for c in db.list_cameras()}
    assert sorted(listed) == ["cam-01", "cam-02", "cam-03"]
    assert listed["cam-02"] == changed
    assert listed["cam-01"] == cams[1]
    assert listed["cam-01"].updated_at.tzinfo is UTC
    with pytest.raises(ValueError):
        db.upsert_cameras([CameraRecord("cam-09", "n", "v", "g", "u", 1.0, True, datetime(2024, 1, 1))])


def test_alert_round_trip_keeps_aware_utc_times(db: MetadataDB) -> None:
    beijing = timezone(timedelta(hours=8))
    alert = _alert(datetime(2024, 5, 1, 16, 0, 0, 123456, tzinfo=beijing), snapshot_key="snapshots/x.jpg")
    db.add_alert(alert)
    got = db.get_alert(alert.id)
    assert got is not None
    assert got.created_at == alert.created_at and got.created_at.tzinfo is UTC
    assert got.created_at == datetime(2024, 5, 1, 8, 0, 0, 123456, tzinfo=UTC)
    assert got.frame_time == alert.frame_time
    assert got.bbox == (10.0, 20.5, 110.0, 220.25)
    assert got.clip_status == "pending" and got.clip_key is None
    assert got == alert  # aware datetimes compare by instant
    assert db.get_alert("missing") is None
    with pytest.raises(ValueError):
        db.add_alert(_alert(datetime(2024, 5, 1, 8, 0)))  # naive


def test_list_alerts_newest_first_with_keyset_pages(db: MetadataDB) -> None:
    alerts = []
    for i in range(23):
        # groups of three share a timestamp, so the id breaks ties
        alerts.append(_alert(T0 + timedelta(seconds=i // 3, microseconds=7), camera_id=f"cam-{i % 4}"))
    for a in alerts[::2] + alerts[1::2]:  # insertion order differs from time order
        db.add_alert(a)
    expected = [a.id for a in sorted(alerts, key=lambda a: (a.created_at, a.id), reverse=True)]

    pages: list[list[str]] = []
    before: tuple[datetime, str] | None = None
    while True:
        page = db.list_alerts(limit=5, before=before)
        if not page:
            break
        pages.append([a.id for a in page])
        before = (page[-1].created_at, page[-1].id)
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [i for p in pages for i in p] == expected
    assert [a.id for a in db.list_alerts()] == expected
    assert [a.id for a in db.list_alerts(limit=2)] == expected[:2]
    with pytest.raises(ValueError):
        db.list_alerts(limit=0)


def test_set_clip_and_snapshot(db: MetadataDB) -> None:
    ok, bad = _alert(T0), _alert(T0 + timedelta(seconds=1))
    db.add_alert(ok)
    db.add_alert(bad)
    db.set_clip(ok.id, key="clips/cam-01/2024/05/01/x.mp4", status="stored", duration_s=12.0)
    db.set_clip(bad.id, key=None, status="failed", error="remux failed: " + "x" * 5000)
    db.set_snapshot(ok.id, "snapshots/cam-01/2024/05/01/x.jpg")
    got_ok, got_bad = db.get_alert(ok.id), db.get_alert(bad.id)
    assert got_ok is not None and got_bad is not None
    assert (got_ok.clip_status, got_ok.clip_key, got_ok.clip_duration_s, got_ok.clip_error) == (
        "stored",
        "clips/cam-01/2024/05/01/x.mp4",
        12.0,
        None,
    )
    assert got_ok.snapshot_key == "snapshots/cam-01/2024/05/01/x.jpg"
    assert got_bad.clip_status == "failed" and got_bad.clip_key is None
    assert got_bad.clip_error is not None and got_bad.clip_error.startswith("remux failed")
    assert len(got_bad.clip_error) <= 2000
    with pytest.raises(ValueError):
        db.set_clip(ok.id, key=None, status="lost")
    with pytest.raises(KeyError):
        db.set_clip("no-such-alert", key=None, status="failed")
    with pytest.raises(KeyError):
        db.set_snapshot("no-such-alert", "k")


def test_concurrent_inserts_and_updates_from_threads(db: MetadataDB) -> None:
    threads_n, per_thread = 8, 25
    errors: list[BaseException] = []
    ids: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(threads_n)

    def work(n: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                alert = _alert(T0 + timedelta(milliseconds=n * 1000 + i), camera_id=f"cam-{n}")
                db.add_alert(alert)
                db.set_clip(alert.id, key=f"clips/{alert.id}.mp4", status="stored", duration_s=float(i))
                db.upsert_cameras([CameraRecord(f"cam-{n}", "c", "v", "g", "rtsp://x/", 1.0)])
                with lock:
                    ids.append(alert.id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    listed = db.list_alerts(limit=1000)
    assert sorted(a.id for a in listed) == sorted(ids)
    assert len(listed) == threads_n * per_thread
    assert all(a.clip_status == "stored" for a in listed)
    assert len(db.list_cameras()) == threads_n


def test_sqlite_file_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "g.db"
    db = MetadataDB(f"sqlite:///{path}")
    db.create_schema()
    db.add_alert(_alert(T0))
    assert path.exists() and Path(f"{path}-wal").exists()
    db.close()


def test_camera_url_with_a_password_is_refused(db: MetadataDB) -> None:
    with pytest.raises(ValueError, match="password") as caught:
        db.upsert_cameras([CameraRecord("cam-01", "n", "v", "g", "rtsp://admin:hunter2@10.0.0.1/", 1.0)])
    assert "hunter2" not in str(caught.value)
    db.upsert_cameras([CameraRecord("cam-01", "n", "v", "g", "rtsp://admin:***@10.0.0.1/", 1.0)])
    assert db.list_cameras()[0].url_redacted == "rtsp://admin:***@10.0.0.1/"


# -- villages, grids, teams, users --------------------------------------------------------------

ARGON = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$0123456789abcdefghijklmnopqrstuvwxyzABCDE"


def _places(db: MetadataDB) -> None:
    db.upsert_villages([VillageRecord("v01", "Dongcun"), VillageRecord("v02", "Xicun")])
    db.upsert_teams([TeamRecord("t1", "Patrol east"), TeamRecord("t2", "Patrol west")])
    db.upsert_grids(
        [
            GridRecord("g0101", "East 1", "v01", "t1"),
            GridRecord("g0102", "East 2", "v01", "t1"),
            GridRecord("g0201", "West 1", "v02", None),
        ]
    )


def test_villages_teams_and_grids(db: MetadataDB) -> None:
    _places(db)
    assert [v.name for v in db.list_villages()] == ["Dongcun", "Xicun"]
    assert [t.id for t in db.list_teams()] == ["t1", "t2"]
    assert [g.id for g in db.list_grids(team_id="t1")] == ["g0101", "g0102"]
    assert [g.id for g in db.list_grids(village_id="v02")] == ["g0201"]
    db.upsert_grids([GridRecord("g0201", "West 1", "v02", "t2")])  # the grid changes team
    assert db.list_grids(team_id="t2") == [GridRecord("g0201", "West 1", "v02", "t2")]
    assert len(db.list_grids()) == 3
    with pytest.raises(IntegrityError):
        db.upsert_grids([GridRecord("g9", "Nowhere", "no-such-village")])


def test_users_keep_only_a_password_hash(db: MetadataDB) -> None:
    _places(db)
    created = T0 - timedelta(days=3)
    alice = UserRecord("alice", "Alice", "operator", None, ARGON, created)
    bob = UserRecord("bob", "Bob", "patrol", "t1", None, created)
    db.upsert_users([alice, bob])
    assert db.get_user("alice") == alice
    assert ARGON not in repr(db.get_user("alice"))
    assert db.list_users(team_id="t1") == [bob]
    # an update keeps the first created_at
    db.upsert_users([UserRecord("bob", "Bob Li", "admin", "t2", "$2b$12$abcdefghijklmnopqrstuv", T0)])
    got = db.get_user("bob")
    assert got is not None and (got.name, got.role, got.team_id, got.created_at) == (
        "Bob Li",
        "admin",
        "t2",
        created,
    )
    assert db.get_user("nobody") is None
    with pytest.raises(ValueError, match="hash"):
        db.upsert_users([UserRecord("eve", "Eve", "operator", None, "hunter2")])
    with pytest.raises(ValueError, match="role"):
        db.upsert_users([UserRecord("eve", "Eve", "root", None)])  # type: ignore[arg-type]
    with pytest.raises(IntegrityError):
        db.upsert_users([UserRecord("eve", "Eve", "patrol", "no-such-team")])
    assert [u.id for u in db.list_users()] == ["alice", "bob"]


# -- events and clips ---------------------------------------------------------------------------


def test_events_and_the_alert_that_points_at_one(db: MetadataDB) -> None:
    first = EventRecord(new_id(), "cam-01", "person", 7, T0, 0.61)
    second = EventRecord(new_id(), "cam-01", "car", 8, T0 + timedelta(seconds=5), 0.7)
    db.add_event(first)
    db.add_event(second)
    db.add_event(EventRecord(new_id(), "cam-02", "person", 1, T0, 0.5))
    db.end_event(first.id, ended_at=T0 + timedelta(seconds=40), best_score=0.93)
    ended = db.get_event(first.id)
    assert ended is not None and ended.ended_at == T0 + timedelta(seconds=40) and ended.best_score == 0.93
    assert [e.id for e in db.list_events("cam-01")] == [second.id, first.id]
    assert db.get_event("missing") is None
    with pytest.raises(KeyError):
        db.end_event("missing", ended_at=T0, best_score=0.1)
    alert = _alert(T0 + timedelta(seconds=2), event_id=first.id)
    db.add_alert(alert)
    assert db.get_alert(alert.id) == alert
    with pytest.raises(IntegrityError):
        db.add_alert(_alert(T0, event_id="no-such-event"))


def _facts(size: int, started_at: datetime = T0) -> ClipFacts:
    return ClipFacts(started_at=started_at, duration_s=30.0, size_bytes=size, sha256="ab" * 32, codec="h264")


def test_clips_of_an_alert_with_continuations(db: MetadataDB) -> None:
    alert = _alert(T0)
    db.add_alert(alert)
    first = db.add_clip(alert.id, "clips/cam-01/2024/05/01/a.mp4")
    assert (first.status, first.sequence, first.size_bytes, first.stored_at) == ("pending", 0, None, None)
    second = db.add_clip(alert.id, "clips/cam-01/2024/05/01/a-1.mp4", sequence=1, status="spooled")
    db.update_clip(first.id, "spooled", facts=_facts(1_000_000))
    db.update_clip(first.id, "stored")
    db.update_clip(second.id, "failed", facts=_facts(5, T0 + timedelta(seconds=30)), error="x" * 5000)
    clips = db.list_clips(alert.id)
    assert [c.id for c in clips] == [first.id, second.id]
    stored, failed = clips
    assert stored.status == "stored" and stored.stored_at is not None and stored.stored_at.tzinfo is UTC
    assert (stored.size_bytes, stored.sha256, stored.codec, stored.started_at) == (
        1_000_000,
        "ab" * 32,
        "h264",
        T0,
    )
    assert failed.error is not None and len(failed.error) <= 2000 and failed.stored_at is None
    assert db.get_clip(first.id) == stored
    assert db.get_clip("missing") is None
    assert db.stored_clip_bytes() == 1_000_000
    db.update_clip(second.id, "stored", facts=_facts(3 * 2**31))  # beyond 32 bits
    assert db.stored_clip_bytes() == 1_000_000 + 3 * 2**31
    db.update_clip(second.id, "evicted")
    assert db.stored_clip_bytes() == 1_000_000


def test_clip_rows_are_checked(db: MetadataDB) -> None:
    alert = _alert(T0)
    db.add_alert(alert)
    db.add_clip(alert.id, "clips/a.mp4")
    with pytest.raises(IntegrityError):
        db.add_clip(alert.id, "clips/b.mp4", sequence=0)  # the sequence number is taken
    with pytest.raises(IntegrityError):
        db.add_clip(alert.id, "clips/a.mp4", sequence=1)  # so is the key
    with pytest.raises(IntegrityError):
        db.add_clip("no-such-alert", "clips/c.mp4")
    with pytest.raises(ValueError):
        db.add_clip(alert.id, "clips/d.mp4", status="lost")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        db.add_clip(alert.id, "clips/d.mp4", sequence=-1)
    with pytest.raises(ValueError, match="sha256"):
        db.add_clip(alert.id, "clips/d.mp4", sequence=2, facts=ClipFacts(T0, 1.0, 1, "XYZ", "h264"))
    with pytest.raises(KeyError):
        db.update_clip("missing", "stored")
    assert db.stored_clip_bytes() == 0


# -- actions, deliveries, audit -----------------------------------------------------------------


def test_alert_actions_tell_the_alert_story(db: MetadataDB) -> None:
    db.upsert_users([UserRecord("op1", "Operator", "operator")])
    alert = _alert(T0)
    db.add_alert(alert)
    ack = db.add_alert_action(alert.id, "acknowledged", user_id="op1", at=T0 + timedelta(seconds=20))
    esc = db.add_alert_action(alert.id, "escalated", note="no patrol answer in 5 min")
    db.add_alert_action(alert.id, "resolved", user_id="op1", note="a neighbour's dog")
    actions = db.list_alert_actions(alert.id)
    assert [a.action for a in actions] == ["acknowledged", "escalated", "resolved"]
    assert actions[0] == ack and actions[0].at == T0 + timedelta(seconds=20)
    assert actions[1] == esc and esc.user_id is None
    assert db.list_alert_actions("other") == []
    with pytest.raises(ValueError):
        db.add_alert_action(alert.id, "deleted")  # type: ignore[arg-type]
    with pytest.raises(IntegrityError):
        db.add_alert_action(alert.id, "comment", user_id="ghost")
    with pytest.raises(IntegrityError):
        db.add_alert_action("no-such-alert", "comment")


def test_deliveries_count_attempts(db: MetadataDB) -> None:
    alert = _alert(T0)
    db.add_alert(alert)
    first = db.record_delivery(alert.id, "webhook", "team:t1", "retrying", error="HTTP 503", at=T0)
    assert (first.attempts, first.status, first.last_error) == (1, "retrying", "HTTP 503")
    later = db.record_delivery(alert.id, "webhook", "team:t1", "sent", at=T0 + timedelta(seconds=4))
    assert (later.attempts, later.status, later.last_error, later.at) == (
        2,
        "sent",
        None,
        T0 + timedelta(seconds=4),
    )
    db.record_delivery(alert.id, "mqtt", "gridwatch/alerts/g0101", "sent")
    assert [(d.channel, d.attempts) for d in db.list_deliveries(alert.id)] == [("mqtt", 1), ("webhook", 2)]
    with pytest.raises(ValueError, match="credentials"):
        db.record_delivery(alert.id, "webpush", "https://push.example/wpush/v2/gAAAAABtoken", "sent")
    with pytest.raises(ValueError, match="credentials"):
        db.record_delivery(
            alert.id, "wecom", "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=s3cr3t", "sent"
        )
    with pytest.raises(ValueError):
        db.record_delivery(alert.id, "webhook", "team:t1", "lost")  # type: ignore[arg-type]
    with pytest.raises(IntegrityError):
        db.record_delivery("no-such-alert", "webhook", "team:t1", "sent")


def test_audit_log(db: MetadataDB) -> None:
    entries = [
        db.add_audit("admin", "camera.create", f"camera:cam-{i}", {"village": "v01", "fps": 2.0, "n": [i]})
        for i in range(5)
    ]
    entries.append(db.add_audit("op1", "alert.acknowledge", "alert:abc", at=T0))
    newest = db.list_audit()
    assert newest == entries[::-1]
    assert newest[0].details == {} and newest[0].at == T0
    assert newest[1].details == {"village": "v01", "fps": 2.0, "n": [4]}
    page = db.list_audit(limit=2, before_id=newest[1].id)
    assert page == entries[3:1:-1]
    assert db.list_audit(target="camera:cam-2") == [entries[2]]
    with pytest.raises(ValueError, match="secret"):
        db.add_audit("admin", "user.create", "user:eve", {"name": "Eve", "password": "hunter2"})
    with pytest.raises(ValueError, match="secret"):
        db.add_audit("admin", "notifier.update", "notifier:1", {"changes": [{"api_key": "k"}]})
    with pytest.raises(TypeError):
        db.add_audit("admin", "x", "y", {"when": T0})  # not JSON
    assert len(db.list_audit(limit=100)) == 6


# -- retention ----------------------------------------------------------------------------------


def test_retention_candidates_oldest_first_by_label(db: MetadataDB) -> None:
    alerts = [
        _alert(T0 + timedelta(hours=i), label="person" if i % 2 else "fire", camera_id=f"cam-{i}")
        for i in range(6)
    ]
    for a in reversed(alerts):
        db.add_alert(a)
    cutoff = T0 + timedelta(hours=4)
    assert [a.id for a in db.list_alerts_older_than(cutoff, label="person")] == [alerts[1].id, alerts[3].id]
    assert [a.id for a in db.list_alerts_older_than(cutoff)] == [a.id for a in alerts[:4]]
    assert [a.id for a in db.list_alerts_older_than(cutoff, limit=1)] == [alerts[0].id]
    assert db.list_alerts_older_than(T0) == []
    assert db.list_alerts_older_than(cutoff, label="car") == []
    with pytest.raises(ValueError):
        db.list_alerts_older_than(datetime(2024, 1, 1))


def test_delete_alert_takes_its_rows_and_returns_its_objects(db: MetadataDB) -> None:
    keep, gone = _alert(T0), _alert(T0 + timedelta(seconds=1), snapshot_key="snapshots/g.jpg")
    db.add_alert(keep)
    db.add_alert(gone)
    db.set_clip(gone.id, key="clips/g.mp4", status="stored", duration_s=30.0)
    db.update_clip(db.add_clip(gone.id, "clips/g.mp4").id, "stored", facts=_facts(700))
    db.update_clip(db.add_clip(gone.id, "clips/g-1.mp4", sequence=1).id, "stored", facts=_facts(300))
    db.update_clip(db.add_clip(keep.id, "clips/k.mp4").id, "stored", facts=_facts(50))
    db.add_alert_action(gone.id, "acknowledged")
    db.record_delivery(gone.id, "webhook", "team:t1", "sent")
    db.add_audit("retention", "alert.delete", f"alert:{gone.id}")
    assert db.stored_clip_bytes() == 1050

    deleted = db.delete_alert(gone.id)
    assert deleted is not None
    assert deleted.alert_id == gone.id and deleted.clip_bytes == 1000
    assert sorted(deleted.object_keys) == ["clips/g-1.mp4", "clips/g.mp4", "snapshots/g.jpg"]
    assert db.get_alert(gone.id) is None
    assert db.list_clips(gone.id) == [] and db.list_alert_actions(gone.id) == []
    assert db.list_deliveries(gone.id) == []
    assert db.stored_clip_bytes() == 50
    assert [a.id for a in db.list_alerts()] == [keep.id] and len(db.list_clips(keep.id)) == 1
    assert db.list_audit(target=f"alert:{gone.id}")  # the audit trail stays
    assert db.delete_alert(gone.id) is None


def test_alerts_oldest_first_with_keyset_paging_and_label_filters(db: MetadataDB) -> None:
    same = T0 + timedelta(hours=1)  # two alerts at the same instant: ordered by id
    alerts = [
        _alert(T0, label="fire"),
        _alert(same, label="person", id="a" * 32),
        _alert(same, label="car", id="b" * 32),
        _alert(T0 + timedelta(hours=2), label="person"),
        _alert(T0 + timedelta(hours=3), label="smoke"),
    ]
    for a in reversed(alerts):
        db.add_alert(a)
    ids = [a.id for a in alerts]
    assert [a.id for a in db.list_alerts_oldest()] == ids
    assert [a.id for a in db.list_alerts_oldest(before=T0 + timedelta(hours=2))] == ids[:3]
    assert [a.id for a in db.list_alerts_oldest(label="person")] == [ids[1], ids[3]]
    assert [a.id for a in db.list_alerts_oldest(other_than=("person", "fire"))] == [ids[2], ids[4]]
    pages: list[str] = []
    after = None
    while page := db.list_alerts_oldest(after=after, limit=2):
        pages += [a.id for a in page]
        after = (page[-1].created_at, page[-1].id)
    assert pages == ids  # the tie at `same` is split across pages without loss or repeat
    assert db.list_alerts_oldest(after=(alerts[-1].created_at, alerts[-1].id)) == []
    with pytest.raises(ValueError):
        db.list_alerts_oldest(before=datetime(2024, 1, 1))
    with pytest.raises(ValueError):
        db.list_alerts_oldest(limit=0)


def test_settled_only_leaves_out_alerts_whose_clip_is_on_its_way(db: MetadataDB) -> None:
    pending, spooled_continuation, stored, failed, no_rows = (
        _alert(T0 + timedelta(seconds=i)) for i in range(5)
    )
    for a in (pending, spooled_continuation, stored, failed, no_rows):
        db.add_alert(a)
    db.add_clip(pending.id, "clips/p.mp4", status="spooled")  # clip summary still "pending"
    db.set_clip(spooled_continuation.id, key="clips/s.mp4", status="stored")
    db.add_clip(spooled_continuation.id, "clips/s.mp4", status="stored", facts=_facts(10))
    db.add_clip(spooled_continuation.id, "clips/s-1.mp4", sequence=1, status="pending")
    db.set_clip(stored.id, key="clips/t.mp4", status="stored")
    db.add_clip(stored.id, "clips/t.mp4", status="stored", facts=_facts(10))
    db.set_clip(failed.id, key=None, status="failed", error="no packets")
    db.set_clip(no_rows.id, key="clips/n.mp4", status="stored")
    assert len(db.list_alerts_oldest()) == 5
    assert [a.id for a in db.list_alerts_oldest(settled_only=True)] == [stored.id, failed.id, no_rows.id]


def test_count_snapshots(db: MetadataDB) -> None:
    assert db.count_snapshots() == 0
    db.add_alert(_alert(T0, snapshot_key="snapshots/a.jpg"))
    db.add_alert(_alert(T0))
    later = _alert(T0)
    db.add_alert(later)
    db.set_snapshot(later.id, "snapshots/c.jpg")
    assert db.count_snapshots() == 2


def test_delete_alert_audited_is_one_transaction(db: MetadataDB) -> None:
    gone = _alert(T0, snapshot_key="snapshots/g.jpg", snapshot_bytes=1234)
    db.add_alert(gone)
    db.update_clip(db.add_clip(gone.id, "clips/g.mp4").id, "stored", facts=_facts(700))
    db.add_alert_action(gone.id, "acknowledged")
    db.record_delivery(gone.id, "webhook", "team:t1", "sent")

    with pytest.raises(ValueError, match="secrets"):
        db.delete_alert_audited(gone.id, actor="retention", action="deleted", details={"token": "x"})
    assert db.get_alert(gone.id) is not None and db.list_audit() == []  # refused before anything changed

    at = T0 + timedelta(days=40)
    deleted = db.delete_alert_audited(
        gone.id, actor="retention", action="deleted", details={"reason": "age"}, at=at
    )
    assert deleted is not None and deleted.clip_bytes == 700
    assert sorted(deleted.object_keys) == ["clips/g.mp4", "snapshots/g.jpg"]
    assert db.get_alert(gone.id) is None and db.list_clips(gone.id) == []
    assert db.list_alert_actions(gone.id) == [] and db.list_deliveries(gone.id) == []
    [entry] = db.list_audit()
    assert (entry.actor, entry.action, entry.target, entry.at) == (
        "retention",
        "deleted",
        f"alert:{gone.id}",
        at,
    )
    assert entry.details == {
        "reason": "age",
        "object_keys": list(deleted.object_keys),
        "clip_bytes": 700,
        "snapshot_bytes": 1234,
        "thumbnail_bytes": None,
    }
    assert db.delete_alert_audited(gone.id, actor="retention", action="deleted") is None
    assert len(db.list_audit()) == 1  # no entry for an alert that was already gone


# -- image sizes and images waiting in a spool ------------------------------------------------------


def test_image_sizes_are_recorded_and_the_last_one_counts(db: MetadataDB) -> None:
    alert, legacy, none = _alert(T0), _alert(T0), _alert(T0)
    for a in (alert, legacy, none):
        db.add_alert(a)
    db.set_snapshot(alert.id, "snapshots/a.jpg", size_bytes=90_000)
    db.set_thumbnail(alert.id, "thumbnails/a.jpg", size_bytes=8_000)
    db.set_snapshot(legacy.id, "snapshots/l.jpg")  # size unknown, as for images stored before 0005
    got = db.get_alert(alert.id)
    assert got is not None and (got.snapshot_bytes, got.thumbnail_bytes) == (90_000, 8_000)
    assert db.stored_image_bytes(snapshot_estimate=1_000, thumbnail_estimate=100) == 90_000 + 8_000 + 1_000
    db.set_snapshot(alert.id, "snapshots/a.jpg", size_bytes=120_000)  # the best frame replaced it
    assert db.stored_image_bytes(snapshot_estimate=1_000, thumbnail_estimate=100) == 120_000 + 8_000 + 1_000
    deleted = db.delete_alert(alert.id)
    assert deleted is not None
    assert (deleted.snapshot_key, deleted.snapshot_bytes) == ("snapshots/a.jpg", 120_000)
    assert (deleted.thumbnail_key, deleted.thumbnail_bytes) == ("thumbnails/a.jpg", 8_000)
    gone = db.delete_alert(none.id)
    assert gone is not None and (gone.snapshot_key, gone.snapshot_bytes, gone.thumbnail_bytes) == (None,) * 3
    with pytest.raises(ValueError):
        db.set_snapshot(legacy.id, "snapshots/l.jpg", size_bytes=-1)
    with pytest.raises(KeyError):
        db.set_thumbnail(alert.id, "thumbnails/a.jpg", size_bytes=1)


def test_images_waiting_in_a_spool_keep_their_alert_unsettled(db: MetadataDB) -> None:
    alert, other = _alert(T0), _alert(T0 + timedelta(seconds=1))
    for a in (alert, other):
        db.add_alert(a)
        db.set_clip(a.id, key=f"clips/{a.id}.mp4", status="stored")
    assert [a.id for a in db.list_alerts_oldest(settled_only=True)] == [alert.id, other.id]
    assert db.count_alerts_in_flight() == 0

    t1 = T0 + timedelta(minutes=1)
    db.mark_image_pending(alert.id, "snapshot", t1)
    db.mark_image_pending(alert.id, "thumbnail", t1)
    assert [a.id for a in db.list_alerts_oldest(settled_only=True)] == [other.id]
    assert db.count_alerts_in_flight() == 1
    assert db.count_alerts_in_flight(before=T0) == 0 and db.count_alerts_in_flight(label="car") == 0

    # The event's best frame is spooled (t2) before the first snapshot's upload is confirmed: that
    # confirmation must not end the wait for the replacement.
    t2 = t1 + timedelta(seconds=20)
    db.mark_image_pending(alert.id, "snapshot", t2)
    db.set_snapshot(alert.id, "snapshots/a.jpg", size_bytes=50_000, spooled_at=t1 + timedelta(microseconds=5))
    db.set_thumbnail(
        alert.id, "thumbnails/a.jpg", size_bytes=5_000, spooled_at=t1 + timedelta(microseconds=9)
    )
    assert db.count_alerts_in_flight() == 1, "the best frame is still on its way"
    db.set_snapshot(alert.id, "snapshots/a.jpg", size_bytes=70_000, spooled_at=t2 + timedelta(microseconds=3))
    assert db.count_alerts_in_flight() == 0
    assert [a.id for a in db.list_alerts_oldest(settled_only=True)] == [alert.id, other.id]
    got = db.get_alert(alert.id)
    assert got is not None and (got.snapshot_bytes, got.thumbnail_bytes) == (70_000, 5_000)

    # An image given up (not written, evicted, refused) ends its wait, but not a later image's.
    t3 = t2 + timedelta(minutes=5)
    db.mark_image_pending(other.id, "thumbnail", t3)
    db.clear_image_pending(other.id, "thumbnail", t2)
    assert db.count_alerts_in_flight() == 1
    db.clear_image_pending(other.id, "thumbnail", t3)
    assert db.count_alerts_in_flight() == 0
    db.clear_image_pending("no-such-alert", "snapshot", t3)  # gone (retention): nothing to do
    with pytest.raises(KeyError):
        db.mark_image_pending("no-such-alert", "snapshot", t3)
    with pytest.raises(ValueError):
        db.mark_image_pending(alert.id, "clip", t3)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        db.mark_image_pending(alert.id, "snapshot", datetime(2024, 5, 1))


def test_count_alerts_in_flight_counts_what_settled_only_leaves_out(db: MetadataDB) -> None:
    pending, spooled_clip, settled = (_alert(T0 + timedelta(seconds=i), label="fire") for i in range(3))
    for a in (pending, spooled_clip, settled):
        db.add_alert(a)
    db.set_clip(spooled_clip.id, key="clips/s.mp4", status="stored")
    db.add_clip(spooled_clip.id, "clips/s-1.mp4", sequence=1, status="spooled")
    db.set_clip(settled.id, key="clips/t.mp4", status="stored")
    assert db.count_alerts_in_flight() == 2 == 3 - len(db.list_alerts_oldest(settled_only=True))
    assert db.count_alerts_in_flight(before=T0 + timedelta(seconds=1)) == 1
    assert db.count_alerts_in_flight(other_than=("fire",)) == 0
    # only what waits in a spool: not an alert whose clip summary alone says "pending" (being recorded)
    assert [a.id for a in db.list_alerts_oldest(unspooled_only=True)] == [pending.id, settled.id]
    assert db.count_alerts_in_flight(spooling_only=True) == 1
    db.mark_image_pending(settled.id, "thumbnail", T0)
    assert [a.id for a in db.list_alerts_oldest(unspooled_only=True)] == [pending.id]
    assert db.count_alerts_in_flight(spooling_only=True) == 2 and db.count_alerts_in_flight() == 3


def test_alerts_are_filtered_by_place_label_severity_status_and_time(db: MetadataDB) -> None:
    rows = [
        _alert(T0, grid="g1", village="v1", camera_id="cam-a", label="fire", severity="critical"),
        _alert(T0 + timedelta(minutes=1), grid="g1", village="v1", camera_id="cam-b", label="person"),
        _alert(T0 + timedelta(minutes=2), grid="g2", village="v2", camera_id="cam-c", label="person"),
        _alert(T0 + timedelta(minutes=3), grid="g2", village="v2", camera_id="cam-c", label="car"),
    ]
    for row in rows:
        db.add_alert(row)
    fire = db.attach_alert_to_incident(
        alert_id=rows[0].id, camera_id="cam-a", village="v1", grid="g1", group="fire", label="fire",
        severity="critical", at=T0, window_s=600, team=None,
    ).incident  # fmt: skip
    db.attach_alert_to_incident(
        alert_id=rows[2].id, camera_id="cam-c", village="v2", grid="g2", group="person", label="person",
        severity="normal", at=T0, window_s=600, team=None,
    )  # fmt: skip
    db.set_incident_status(fire.id, expected="new", status="acknowledged", user_id=None)

    def ids(**filters: Any) -> list[str]:
        return [a.id for a in db.list_alerts(limit=50, **filters)]

    assert ids(grids=["g1"]) == [rows[1].id, rows[0].id]
    assert ids(villages=["v2"], labels=["person"]) == [rows[2].id]
    assert ids(cameras=["cam-c"]) == [rows[3].id, rows[2].id]
    assert ids(severities=["critical"]) == [rows[0].id]
    assert ids(statuses=["acknowledged"]) == [rows[0].id]
    # "new": incidents not acted on yet, and alerts the dispatcher has not reached
    assert ids(statuses=["new"]) == [rows[3].id, rows[2].id, rows[1].id]
    assert ids(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)) == [rows[2].id, rows[1].id]
    assert ids(grids=[]) == []
    page = db.list_alerts(limit=1, grids=["g2"])
    assert [a.id for a in db.list_alerts(limit=5, before=(page[0].created_at, page[0].id), grids=["g2"])] == [
        rows[2].id
    ]
