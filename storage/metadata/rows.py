"""Rows to records and the few statements that need dialect-specific SQL (upserts) or several tables
(deleting an alert with everything that hangs on it)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, delete, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

from storage.metadata.records import CLIP_STATUSES, AlertRecord, DeletedAlert
from storage.metadata.tables import AlertActionRow, AlertRow, Base, ClipRow, DeliveryRow

R = TypeVar("R")


def to_record(cls: type[R], row: Any) -> R:
    """A record from the ORM row's attributes of the same names."""
    return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})  # type: ignore[arg-type]


def alert_record(row: AlertRow) -> AlertRecord:
    x1, y1, x2, y2 = (float(v) for v in row.bbox)
    status = row.clip_status
    assert status in CLIP_STATUSES, status
    return AlertRecord(
        id=row.id,
        camera_id=row.camera_id,
        village=row.village,
        grid=row.grid,
        label=row.label,
        score=row.score,
        bbox=(x1, y1, x2, y2),
        created_at=row.created_at,
        frame_time=row.frame_time,
        stream_time_s=row.stream_time_s,
        snapshot_key=row.snapshot_key,
        clip_key=row.clip_key,
        clip_status=status,  # type: ignore[arg-type]  # checked above
        clip_duration_s=row.clip_duration_s,
        clip_error=row.clip_error,
        event_id=row.event_id,
        thumbnail_key=row.thumbnail_key,
        snapshot_bytes=row.snapshot_bytes,
        thumbnail_bytes=row.thumbnail_bytes,
        severity=row.severity,
        rule=row.rule,
        incident_id=row.incident_id,
        worker_id=row.worker_id,
        fence_token=row.fence_token,
    )


def in_flight(*, recording: bool = True) -> ColumnElement[bool]:
    """True for an alert something of which may still land in the store: a clip row "pending" or
    "spooled", or an image waiting in a spool; with `recording`, also a clip summary "pending" (its first
    clip is being recorded, or spooled without a row)."""
    clip_on_its_way = (
        select(ClipRow.id)
        .where(ClipRow.alert_id == AlertRow.id, ClipRow.status.in_(("pending", "spooled")))
        .exists()
    )
    spooling = [
        clip_on_its_way,
        AlertRow.snapshot_pending_since.is_not(None),
        AlertRow.thumbnail_pending_since.is_not(None),
    ]
    return or_(AlertRow.clip_status == "pending", *spooling) if recording else or_(*spooling)


def upsert_statement(dialect: str, model: type[Base], keep: tuple[str, ...] = ()) -> Executable:
    """INSERT ... ON CONFLICT (primary key) DO UPDATE: one statement, no read-then-write race.

    Columns in `keep` (e.g. created_at) keep their first value when the row exists."""
    table = model.__table__
    key = [c.name for c in table.primary_key]
    columns = [c.name for c in table.columns if c.name not in key and c.name not in keep]
    if dialect == "sqlite":
        lite = sqlite.insert(model)
        return lite.on_conflict_do_update(index_elements=key, set_={c: lite.excluded[c] for c in columns})
    pg = postgresql.insert(model)
    return pg.on_conflict_do_update(index_elements=key, set_={c: pg.excluded[c] for c in columns})


def delivery_upsert(dialect: str) -> Executable:
    """Insert the first record, or add its attempts to the existing row."""
    ins = sqlite.insert(DeliveryRow) if dialect == "sqlite" else postgresql.insert(DeliveryRow)
    return ins.on_conflict_do_update(
        index_elements=["key"],
        set_={
            "status": ins.excluded.status,
            "last_error": ins.excluded.last_error,
            "at": ins.excluded.at,
            "attempts": DeliveryRow.attempts + ins.excluded.attempts,
        },
    )


def delete_alert_rows(session: Session, alert_id: str) -> DeletedAlert | None:
    """The alert with its clip rows, actions and deliveries, inside the caller's transaction."""
    # writes first: on SQLite the first statement takes the write lock, so busy_timeout applies
    clips = session.execute(
        delete(ClipRow).where(ClipRow.alert_id == alert_id).returning(ClipRow.object_key, ClipRow.size_bytes)
    ).all()
    session.execute(delete(AlertActionRow).where(AlertActionRow.alert_id == alert_id))
    session.execute(delete(DeliveryRow).where(DeliveryRow.alert_id == alert_id))
    alert = session.execute(
        delete(AlertRow)
        .where(AlertRow.id == alert_id)
        .returning(
            AlertRow.snapshot_key,
            AlertRow.clip_key,
            AlertRow.thumbnail_key,
            AlertRow.snapshot_bytes,
            AlertRow.thumbnail_bytes,
        )
    ).one_or_none()
    if alert is None:
        return None
    keys = [key for key, _ in clips] + [
        k for k in (alert.clip_key, alert.snapshot_key, alert.thumbnail_key) if k
    ]
    return DeletedAlert(
        alert_id=alert_id,
        object_keys=tuple(dict.fromkeys(keys)),  # the alert's clip_key is usually clip 0's key
        clip_bytes=sum(size or 0 for _, size in clips),
        snapshot_key=alert.snapshot_key,
        snapshot_bytes=alert.snapshot_bytes if alert.snapshot_key else None,
        thumbnail_key=alert.thumbnail_key,
        thumbnail_bytes=alert.thumbnail_bytes if alert.thumbnail_key else None,
    )
