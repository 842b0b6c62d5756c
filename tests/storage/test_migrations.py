"""Alembic migrations of the metadata database, on SQLite and PostgreSQL (fixture `db_url` in conftest.py):
upgrade from empty, ORM models == migrated schema, downgrade and upgrade again, adoption of a database made by
the `create_all` schema of before migrations, and many processes migrating at once."""

from __future__ import annotations

import dataclasses
import fcntl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Column,
    Engine,
    Float,
    Index,
    MetaData,
    String,
    Table,
    Text,
    insert,
    inspect,
    text,
)
from sqlalchemy.exc import IntegrityError

from storage import migrations
from storage.metadata import AlertRecord, MetadataDB, UtcDateTime, make_engine, model_metadata, new_id

REPO = Path(__file__).resolve().parents[2]
ALL_TABLES = {
    "alembic_version",
    "incidents",
    "push_subscriptions",
    "rule_overrides",
    "cameras",
    "villages",
    "grids",
    "teams",
    "users",
    "events",
    "alerts",
    "alert_actions",
    "clips",
    "deliveries",
    "audit_log",
    "sessions",
    "api_tokens",
    "camera_fences",
}
T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
SIZE_COLUMNS = ("snapshot_bytes", "thumbnail_bytes", "snapshot_pending_since", "thumbnail_pending_since")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def _schema_diffs(engine: Engine) -> list[Any]:
    """What `alembic check` would report: differences between the ORM models and the database."""
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, model_metadata()))


def _check_constraints(engine: Engine) -> dict[str, set[str]]:
    found = inspect(engine)
    names = {
        t: {c["name"] for c in found.get_check_constraints(t) if c["name"]} for t in found.get_table_names()
    }
    return {t: n for t, n in names.items() if n}


def _model_check_constraints() -> dict[str, set[str]]:
    """compare_metadata does not look at CHECK constraints: compare their names ourselves."""
    expected: dict[str, set[str]] = {}
    for table in model_metadata().tables.values():
        for c in table.constraints:
            if isinstance(c, CheckConstraint) and isinstance(c.name, str):
                expected.setdefault(table.name, set()).add(c.name)
    return expected


def test_upgrade_from_empty_matches_the_models(db_url: str, engine: Engine) -> None:
    db = MetadataDB(db_url)
    assert db.schema_revision() is None
    db.migrate()
    assert db.schema_revision() == migrations.head_revision() == "0010"
    assert _tables(engine) == ALL_TABLES
    assert _schema_diffs(engine) == []
    assert _check_constraints(engine) == _model_check_constraints()
    db.migrate()  # idempotent
    assert db.schema_revision() == migrations.head_revision()
    with engine.begin() as conn, pytest.raises(IntegrityError):
        conn.execute(
            text("INSERT INTO users (id, name, role, created_at) VALUES ('u', 'U', 'root', :t)"), {"t": T0}
        )
    db.close()


def test_downgrade_step_by_step_to_base_and_upgrade_again(db_url: str, engine: Engine) -> None:
    db = MetadataDB(db_url)
    db.migrate()
    migrations.downgrade(engine, "0009")
    assert db.schema_revision() == "0009"
    assert "detection" not in {c["name"] for c in inspect(engine).get_columns("cameras")}
    migrations.downgrade(engine, "0008")
    assert db.schema_revision() == "0008"
    assert "camera_fences" not in _tables(engine)
    assert not {"worker_id", "fence_token"} & {c["name"] for c in inspect(engine).get_columns("alerts")}
    migrations.downgrade(engine, "0005")
    assert db.schema_revision() == "0005"
    assert not {"incidents", "push_subscriptions", "rule_overrides"} & _tables(engine)
    assert "incident_id" not in {c["name"] for c in inspect(engine).get_columns("alerts")}
    migrations.downgrade(engine, "0004")
    assert db.schema_revision() == "0004"
    assert not set(SIZE_COLUMNS) & {c["name"] for c in inspect(engine).get_columns("alerts")}
    migrations.downgrade(engine, "0003")
    assert db.schema_revision() == "0003"
    assert "thumbnail_key" not in {c["name"] for c in inspect(engine).get_columns("alerts")}
    migrations.downgrade(engine, "0002")
    assert db.schema_revision() == "0002"
    assert _tables(engine) == {"alembic_version", "cameras", "alerts", "villages", "grids", "teams", "users"}
    assert "event_id" not in {c["name"] for c in inspect(engine).get_columns("alerts")}
    migrations.downgrade(engine, "0001")
    assert _tables(engine) == {"alembic_version", "cameras", "alerts"}
    migrations.downgrade(engine, "base")
    assert _tables(engine) == {"alembic_version"}
    assert db.schema_revision() is None
    db.migrate()
    assert _tables(engine) == ALL_TABLES
    assert _schema_diffs(engine) == []
    assert _check_constraints(engine) == _model_check_constraints()
    db.close()


def _alert(**overrides: Any) -> AlertRecord:
    values: dict[str, Any] = {
        "id": new_id(),
        "camera_id": "cam-01",
        "village": "v01",
        "grid": "g0101",
        "label": "person",
        "score": 0.9,
        "bbox": (1.0, 2.0, 3.0, 4.0),
        "created_at": T0,
        "frame_time": T0,
    }
    return AlertRecord(**(values | overrides))


def test_upgrade_to_0006_keeps_deliveries_and_actions(db_url: str, engine: Engine) -> None:
    """Deliveries of the old shape get their key (alert:channel:target); actions and alerts stay; the way
    back keeps them too."""
    db = MetadataDB(db_url)
    db.migrate()
    migrations.downgrade(engine, "0005")
    alert_id = new_id()
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO alerts (id, camera_id, village, grid, label, score, bbox, created_at, "
                "frame_time, clip_status) VALUES (:id, 'cam-01', 'v01', 'g0101', 'fire', 0.9, "
                "'[1, 2, 3, 4]', :t, :t, 'pending')"
            ),
            {"id": alert_id, "t": T0.replace(tzinfo=None)},
        )
        conn.execute(
            text(
                "INSERT INTO deliveries (alert_id, channel, target, status, attempts, at) "
                "VALUES (:id, 'webhook', 'team:t1', 'sent', 2, :t)"
            ),
            {"id": alert_id, "t": T0.replace(tzinfo=None)},
        )
        conn.execute(
            text("INSERT INTO alert_actions (alert_id, action, at) VALUES (:id, 'acknowledged', :t)"),
            {"id": alert_id, "t": T0.replace(tzinfo=None)},
        )
    db.migrate()
    assert db.schema_revision() == migrations.head_revision() and _schema_diffs(engine) == []
    [delivery] = db.list_deliveries(alert_id)
    assert (delivery.key, delivery.status, delivery.attempts) == (f"{alert_id}:webhook:team:t1", "sent", 2)
    assert db.delivery_done(delivery.key)
    assert [a.action for a in db.list_alert_actions(alert_id)] == ["acknowledged"]
    alert = db.get_alert(alert_id)
    assert alert is not None and alert.incident_id is None and alert.severity is None
    db.record_delivery(alert_id, "webhook", "ops", "gone", key="inc:new:x:ops:abc")
    db.add_alert_action(alert_id, "on_scene")
    migrations.downgrade(engine, "0005")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT channel, target, status FROM deliveries ORDER BY target")).all()
        actions = conn.execute(text("SELECT action FROM alert_actions")).scalars().all()
    assert [tuple(r) for r in rows] == [("webhook", "ops", "failed"), ("webhook", "team:t1", "sent")]
    assert actions == ["acknowledged"]  # on_scene has no old equivalent
    db.migrate()
    db.close()


def test_upgrade_to_0007_keeps_users_enabled_and_the_way_back(db_url: str, engine: Engine) -> None:
    """Users of 0006 come through 0007 enabled (server default false) with their password hash; sessions and
    tokens go on the way back, users and their CHECK constraint stay."""
    db = MetadataDB(db_url)
    db.migrate()
    migrations.downgrade(engine, "0006")
    assert db.schema_revision() == "0006"
    assert not {"sessions", "api_tokens"} & _tables(engine)
    assert "disabled" not in {c["name"] for c in inspect(engine).get_columns("users")}
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (id, name, role, password_hash, created_at) "
                "VALUES ('li', 'Li', 'admin', '$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g', :t)"
            ),
            {"t": T0.replace(tzinfo=None)},
        )
    db.migrate()
    assert db.schema_revision() == migrations.head_revision() and _schema_diffs(engine) == []
    user = db.get_user("li")
    assert user is not None and user.disabled is False and user.password_hash is not None
    assert db.count_admins() == 1
    with engine.begin() as conn, pytest.raises(IntegrityError):  # not null
        conn.execute(text("UPDATE users SET disabled = NULL WHERE id = 'li'"))
    db.set_user_disabled("li", True)
    assert db.count_admins() == 0
    db.create_session(
        session_id="a" * 64, user_id="li", csrf_token="c", expires_at=T0.replace(year=2099), at=T0
    )
    db.create_api_token(user_id="li", name="cron", token_hash="b" * 64, prefix="0123abcd", at=T0)
    migrations.downgrade(engine, "0006")
    assert not {"sessions", "api_tokens"} & _tables(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, role FROM users")).all() == [("li", "admin")]
    assert _check_constraints(engine)["users"] == {"ck_users_role"}
    db.migrate()
    again = db.get_user("li")
    assert again is not None and again.disabled is False  # the flag went with the column
    assert db.get_session_by_hash("a" * 64) is None and db.list_api_tokens() == []
    db.close()


def test_upgrade_to_0008_keeps_cameras_and_organisation_as_config(db_url: str, engine: Engine) -> None:
    """Rows of 0007 come through 0008 with source "config" and no sealed URL (the worker has theirs from
    the config); the way back drops the registry's columns and keeps the rows."""
    db = MetadataDB(db_url)
    db.migrate()
    migrations.downgrade(engine, "0007")
    assert "source" not in {c["name"] for c in inspect(engine).get_columns("cameras")}
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO villages (id, name) VALUES ('v1', 'V1')"))
        conn.execute(text("INSERT INTO teams (id, name) VALUES ('t1', 'T1')"))
        conn.execute(text("INSERT INTO grids (id, name, village_id, team_id) VALUES ('g1', 'G', 'v1', 't1')"))
        conn.execute(
            text(
                "INSERT INTO cameras (id, name, village, grid, url_redacted, detect_fps, enabled, "
                "updated_at) VALUES ('cam', 'Gate', 'v1', 'g1', 'rtsp://u:***@h/s', 2.0, :on, :t)"
            ),
            {"on": True, "t": T0.replace(tzinfo=None)},
        )
    db.migrate()
    assert db.schema_revision() == migrations.head_revision() and _schema_diffs(engine) == []
    [camera] = db.list_cameras()
    assert (camera.source, camera.url_sealed, camera.probe) == ("config", None, None)
    assert [v.source for v in db.list_villages()] == ["config"]
    assert [(t.source, t.roster) for t in db.list_teams()] == [("config", ())]
    assert [g.source for g in db.list_grids()] == ["config"]
    migrations.downgrade(engine, "0007")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, url_redacted FROM cameras")).all() == [
            ("cam", "rtsp://u:***@h/s")
        ]
        assert conn.execute(text("SELECT id FROM grids")).all() == [("g1",)]
    db.close()


def test_downgrade_of_the_evidence_tables_keeps_alerts(db_url: str, engine: Engine) -> None:
    db = MetadataDB(db_url)
    db.migrate()
    alert = _alert(snapshot_key="snapshots/a.jpg", clip_status="stored", clip_key="clips/a.mp4")
    db.add_alert(alert)
    db.add_clip(alert.id, "clips/a.mp4")
    migrations.downgrade(engine, "0002")  # on SQLite the alerts table is copied to drop event_id
    db.migrate()
    assert db.get_alert(alert.id) == alert
    assert db.list_clips(alert.id) == []  # the clips table went with 0003's downgrade
    db.close()


def test_downgrade_of_the_thumbnail_column_keeps_alerts(db_url: str, engine: Engine) -> None:
    db = MetadataDB(db_url)
    db.migrate()
    alert = _alert(snapshot_key="snapshots/b.jpg", thumbnail_key="thumbnails/b.jpg")
    db.add_alert(alert)
    db.add_clip(alert.id, "clips/b.mp4")
    migrations.downgrade(engine, "0003")  # on SQLite the alerts table is copied to drop the column
    assert [c.object_key for c in db.list_clips(alert.id)] == ["clips/b.mp4"]
    db.migrate()
    assert db.get_alert(alert.id) == dataclasses.replace(alert, thumbnail_key=None)
    db.set_thumbnail(alert.id, "thumbnails/b.jpg")
    assert db.get_alert(alert.id) == alert
    deleted = db.delete_alert(alert.id)  # retention deletes the thumbnail with the rest
    assert deleted is not None
    assert set(deleted.object_keys) == {"clips/b.mp4", "snapshots/b.jpg", "thumbnails/b.jpg"}
    db.close()


def test_upgrade_from_0004_keeps_rows_and_sizes_start_unknown(db_url: str, engine: Engine) -> None:
    """A database at 0004 with alerts, a clip row and an action in it: 0005 adds the size and pending columns
    (NULL for the rows there), keeps every row, and what was stored before counts at the estimates."""
    db = MetadataDB(db_url)
    db.migrate()
    migrations.downgrade(engine, "0004")
    alerts = Table("alerts", MetaData(), autoload_with=engine)
    assert not set(SIZE_COLUMNS) & set(alerts.columns.keys())
    rows = [
        {
            "id": new_id(),
            "camera_id": "cam-01",
            "village": "v01",
            "grid": "g0101",
            "label": label,
            "score": 0.9,
            "bbox": [1.0, 2.0, 3.0, 4.0],
            "created_at": T0.replace(minute=i),
            "frame_time": T0.replace(minute=i),
            "snapshot_key": f"snapshots/{i}.jpg",
            "thumbnail_key": f"thumbnails/{i}.jpg" if i else None,
            "clip_key": f"clips/{i}.mp4",
            "clip_status": "stored",
        }
        for i, label in enumerate(("person", "fire"))
    ]
    with engine.begin() as conn:
        conn.execute(insert(alerts), rows)
        conn.execute(
            text(
                "INSERT INTO clips (id, alert_id, object_key, sequence, status, size_bytes, created_at) "
                "VALUES ('c1', :alert, 'clips/0.mp4', 0, 'stored', 5000, :at)"
            ),
            {"alert": rows[0]["id"], "at": T0.replace(tzinfo=None)},
        )
        conn.execute(
            text("INSERT INTO alert_actions (alert_id, action, at) VALUES (:alert, 'acknowledged', :at)"),
            {"alert": rows[1]["id"], "at": T0.replace(tzinfo=None)},
        )

    db.migrate()

    assert db.schema_revision() == migrations.head_revision() and _schema_diffs(engine) == []
    with engine.connect() as conn:
        sizes = conn.execute(text(f"SELECT id, {', '.join(SIZE_COLUMNS)} FROM alerts ORDER BY id")).all()
    assert sorted(sizes) == sorted((r["id"], None, None, None, None) for r in rows)
    first, second = (db.get_alert(str(r["id"])) for r in rows)
    assert first is not None and second is not None
    assert (first.label, first.snapshot_key, first.thumbnail_key, first.clip_key) == (
        "person",
        "snapshots/0.jpg",
        None,
        "clips/0.mp4",
    )
    assert (second.label, second.thumbnail_key, second.snapshot_bytes, second.thumbnail_bytes) == (
        "fire",
        "thumbnails/1.jpg",
        None,
        None,
    )
    assert [c.size_bytes for c in db.list_clips(first.id)] == [5000]
    assert [a.action for a in db.list_alert_actions(second.id)] == ["acknowledged"]
    # stored before sizes were recorded: the estimates; a size recorded now replaces its estimate
    assert db.stored_image_bytes(snapshot_estimate=100, thumbnail_estimate=10) == 2 * 100 + 10
    db.set_snapshot(first.id, "snapshots/0.jpg", size_bytes=4321)
    assert db.stored_image_bytes(snapshot_estimate=100, thumbnail_estimate=10) == 4321 + 100 + 10

    migrations.downgrade(engine, "0004")  # and back: the rows stay (SQLite copies the table)
    assert db.schema_revision() == "0004"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alerts")).scalar() == 2
    db.migrate()
    again = db.get_alert(first.id)
    assert again is not None and again.snapshot_bytes is None and again.snapshot_key == "snapshots/0.jpg"
    db.close()


# -- adopting a database made before migrations -------------------------------------------------


def _legacy_metadata() -> MetaData:
    """The schema `MetadataDB.create_schema()` made with `metadata.create_all` before migrations existed."""
    meta = MetaData()
    Table(
        "cameras",
        meta,
        Column("id", String(128), primary_key=True),
        Column("name", String(256), nullable=False),
        Column("village", String(128), nullable=False, index=True),
        Column("grid", String(128), nullable=False, index=True),
        Column("url_redacted", String(2048), nullable=False),
        Column("detect_fps", Float, nullable=False),
        Column("enabled", Boolean, nullable=False),
        Column("updated_at", UtcDateTime, nullable=False),
    )
    Table(
        "alerts",
        meta,
        Column("id", String(32), primary_key=True),
        Column("camera_id", String(128), nullable=False, index=True),
        Column("village", String(128), nullable=False),
        Column("grid", String(128), nullable=False),
        Column("label", String(64), nullable=False),
        Column("score", Float, nullable=False),
        Column("bbox", JSON, nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("frame_time", UtcDateTime, nullable=False),
        Column("snapshot_key", String(1024)),
        Column("clip_key", String(1024)),
        Column("clip_status", String(16), nullable=False),
        Column("clip_duration_s", Float),
        Column("clip_error", Text),
        Column("stream_time_s", Float),
        Index("ix_alerts_created_at_id", "created_at", "id"),
        Index("ix_alerts_grid_created_at", "grid", "created_at"),
        CheckConstraint("clip_status IN ('pending', 'stored', 'failed')", name="ck_alerts_clip_status"),
    )
    return meta


def _legacy_database(engine: Engine) -> list[str]:
    """A create_all database with a camera and three alerts in it; returns the alert ids."""
    legacy = _legacy_metadata()
    legacy.create_all(engine)
    ids = [new_id() for _ in range(3)]
    with engine.begin() as conn:
        conn.execute(
            insert(legacy.tables["cameras"]),
            [
                {
                    "id": "cam-01",
                    "name": "Main road",
                    "village": "v01",
                    "grid": "g0101",
                    "url_redacted": "rtsp://admin:***@10.0.0.1/s1",
                    "detect_fps": 2.0,
                    "enabled": True,
                    "updated_at": T0,
                }
            ],
        )
        conn.execute(
            insert(legacy.tables["alerts"]),
            [
                {
                    "id": alert_id,
                    "camera_id": "cam-01",
                    "village": "v01",
                    "grid": "g0101",
                    "label": "person",
                    "score": 0.5 + i / 10,
                    "bbox": [1.0, 2.0, 3.0, 4.0],
                    "created_at": T0.replace(minute=i),
                    "frame_time": T0.replace(minute=i),
                    "snapshot_key": f"snapshots/{alert_id}.jpg",
                    "clip_key": f"clips/{alert_id}.mp4" if i else None,
                    "clip_status": "stored" if i else "failed",
                    "clip_duration_s": 12.5 if i else None,
                    "clip_error": None if i else "camera disconnected",
                    "stream_time_s": 3.25,
                }
                for i, alert_id in enumerate(ids)
            ],
        )
    return ids


def test_a_create_all_database_is_adopted_with_its_rows(db_url: str, engine: Engine) -> None:
    ids = _legacy_database(engine)
    assert _tables(engine) == {"cameras", "alerts"}
    db = MetadataDB(db_url)
    db.create_schema()  # the name gridwatch/runtime.py calls at start
    assert db.schema_revision() == migrations.head_revision()
    assert _tables(engine) == ALL_TABLES
    assert _schema_diffs(engine) == []
    assert _check_constraints(engine) == _model_check_constraints()

    cams = db.list_cameras()
    assert [(c.id, c.url_redacted, c.updated_at) for c in cams] == [
        ("cam-01", "rtsp://admin:***@10.0.0.1/s1", T0)
    ]
    alerts = {a.id: a for a in db.list_alerts()}
    assert sorted(alerts) == sorted(ids)
    failed, stored = alerts[ids[0]], alerts[ids[2]]
    assert (failed.clip_status, failed.clip_error, failed.clip_key) == ("failed", "camera disconnected", None)
    assert (stored.clip_status, stored.clip_key, stored.clip_duration_s) == (
        "stored",
        f"clips/{ids[2]}.mp4",
        12.5,
    )
    assert stored.created_at == T0.replace(minute=2) and stored.event_id is None
    assert stored.bbox == (1.0, 2.0, 3.0, 4.0) and stored.stream_time_s == 3.25
    # the adopted rows work with the new tables
    db.add_clip(ids[2], f"clips/{ids[2]}.mp4")
    db.add_alert_action(ids[2], "acknowledged")
    deleted = db.delete_alert(ids[2])
    assert deleted is not None and f"clips/{ids[2]}.mp4" in deleted.object_keys
    db.migrate()
    assert len(db.list_alerts()) == 2
    db.close()


def test_a_partial_schema_without_version_is_refused(db_url: str, engine: Engine) -> None:
    legacy = _legacy_metadata()
    legacy.tables["cameras"].create(engine)
    with pytest.raises(RuntimeError, match="adopt"):
        MetadataDB(db_url).migrate()


# -- many processes at once ---------------------------------------------------------------------

_MIGRATE = (
    "import sys; from storage.metadata import MetadataDB; db = MetadataDB(sys.argv[1]); db.migrate(); "
    "print(db.schema_revision())"
)


@contextmanager
def _hold_migration_lock(db_url: str, engine: Engine) -> Iterator[Any]:
    """Hold the lock `migrate()` takes; yields a function that counts the processes waiting for it."""
    if engine.dialect.name == "postgresql":
        url = engine.url
        with psycopg.connect(
            host=url.host, port=url.port, user=url.username, dbname=url.database, autocommit=True
        ) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (migrations.MIGRATION_LOCK_KEY,))

            def waiting() -> int:
                query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                row = conn.execute(query).fetchone()
                return int(row[0]) if row else 0

            yield waiting
    else:
        database = Path(engine.url.database or "")
        database.parent.mkdir(parents=True, exist_ok=True)
        lock_path = database.with_name(database.name + ".migrate-lock")
        with open(lock_path, "a+b") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            inode = lock_path.stat().st_ino

            def waiting() -> int:  # blocked flock()s show in /proc/locks as "N: -> FLOCK ... dev:inode ..."
                lines = Path("/proc/locks").read_text().splitlines()
                return sum(1 for line in lines if "->" in line and f":{inode} " in line)

            yield waiting


def test_processes_starting_at_once_all_migrate(db_url: str, engine: Engine) -> None:
    """Three processes start together while the migration lock is held (so they really do meet at the lock);
    once it is released all of them succeed and the schema is at head exactly once."""
    procs: list[subprocess.Popen[str]] = []
    with _hold_migration_lock(db_url, engine) as waiting:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _MIGRATE, db_url],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        deadline = time.monotonic() + 60
        while waiting() < len(procs):
            assert time.monotonic() < deadline, "the processes never queued on the migration lock"
            assert all(p.poll() is None for p in procs), [
                p.communicate() for p in procs if p.poll() is not None
            ]
            time.sleep(0.05)
        assert _tables(engine) <= {"alembic_version"}  # nobody got past the lock
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert [out.strip() for out, _ in outputs] == [migrations.head_revision()] * 3
    assert _tables(engine) == ALL_TABLES
    assert _schema_diffs(engine) == []


def test_threads_migrating_at_once(db_url: str, engine: Engine) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work() -> None:
        db = MetadataDB(db_url)
        try:
            start.wait()
            db.migrate()
        except BaseException as exc:
            errors.append(exc)
        finally:
            db.close()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _schema_diffs(engine) == []
