"""Metadata database: cameras and alerts, on SQLite (one box) or PostgreSQL (many machines).

ORM classes stay inside this module; callers get frozen `CameraRecord` / `AlertRecord` values. Every call
opens its own session, so one `MetadataDB` can be shared by many threads.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Dialect,
    Engine,
    Float,
    Index,
    String,
    Text,
    and_,
    create_engine,
    event,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql import Executable
from sqlalchemy.types import TypeDecorator

__all__ = ["AlertRecord", "CameraRecord", "ClipStatus", "MetadataDB", "new_alert_id"]

ClipStatus = Literal["pending", "stored", "failed"]
CLIP_STATUSES: tuple[str, ...] = get_args(ClipStatus)
_MAX_ERROR_CHARS = 2000
_MAX_PAGE = 1000


def new_alert_id() -> str:
    return uuid.uuid4().hex


def _utcnow() -> datetime:
    return datetime.now(UTC)


# -- values handed to callers -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CameraRecord:
    id: str
    name: str
    village: str
    grid: str
    url_redacted: str
    detect_fps: float
    enabled: bool = True
    updated_at: datetime = field(default_factory=_utcnow)


@dataclass(frozen=True, slots=True)
class AlertRecord:
    id: str
    camera_id: str
    village: str
    grid: str
    label: str
    score: float
    bbox: tuple[float, float, float, float]
    created_at: datetime
    frame_time: datetime
    snapshot_key: str | None = None
    clip_key: str | None = None
    clip_status: ClipStatus = "pending"
    clip_duration_s: float | None = None
    clip_error: str | None = None
    stream_time_s: float | None = None  # seconds into the camera's stream (connection) of the frame


# -- ORM ----------------------------------------------------------------------------------------


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    PostgreSQL stores `timestamptz`; SQLite has no time zones, so values are stored as naive UTC (the fixed
    width text form sorts in time order, which keyset pagination relies on) and come back tagged UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the metadata database stores aware UTC datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class _Base(DeclarativeBase):
    pass


class _Camera(_Base):
    __tablename__ = "cameras"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    village: Mapped[str] = mapped_column(String(128), index=True)
    grid: Mapped[str] = mapped_column(String(128), index=True)
    url_redacted: Mapped[str] = mapped_column(String(2048))
    detect_fps: Mapped[float] = mapped_column(Float)
    enabled: Mapped[bool]
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class _Alert(_Base):
    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_created_at_id", "created_at", "id"),
        Index("ix_alerts_grid_created_at", "grid", "created_at"),
        CheckConstraint(
            "clip_status IN ({})".format(", ".join(f"'{s}'" for s in CLIP_STATUSES)),
            name="ck_alerts_clip_status",
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(128), index=True)
    village: Mapped[str] = mapped_column(String(128))
    grid: Mapped[str] = mapped_column(String(128))
    label: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)
    bbox: Mapped[list[float]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    frame_time: Mapped[datetime] = mapped_column(UtcDateTime)
    snapshot_key: Mapped[str | None] = mapped_column(String(1024))
    clip_key: Mapped[str | None] = mapped_column(String(1024))
    clip_status: Mapped[str] = mapped_column(String(16), default="pending")
    clip_duration_s: Mapped[float | None] = mapped_column(Float)
    clip_error: Mapped[str | None] = mapped_column(Text)
    stream_time_s: Mapped[float | None] = mapped_column(Float)


def _camera_values(rec: CameraRecord) -> dict[str, Any]:
    return {
        "id": rec.id,
        "name": rec.name,
        "village": rec.village,
        "grid": rec.grid,
        "url_redacted": rec.url_redacted,
        "detect_fps": rec.detect_fps,
        "enabled": rec.enabled,
        "updated_at": rec.updated_at,
    }


def _camera_record(row: _Camera) -> CameraRecord:
    return CameraRecord(
        id=row.id,
        name=row.name,
        village=row.village,
        grid=row.grid,
        url_redacted=row.url_redacted,
        detect_fps=row.detect_fps,
        enabled=row.enabled,
        updated_at=row.updated_at,
    )


def _alert_record(row: _Alert) -> AlertRecord:
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
    )


def _camera_upsert(dialect: str) -> Executable:
    """INSERT ... ON CONFLICT (id) DO UPDATE: one statement, no read-then-write race."""
    columns = [col.name for col in _Camera.__table__.columns if col.name != "id"]
    if dialect == "sqlite":
        lite = sqlite.insert(_Camera)
        return lite.on_conflict_do_update(index_elements=["id"], set_={c: lite.excluded[c] for c in columns})
    pg = postgresql.insert(_Camera)
    return pg.on_conflict_do_update(index_elements=["id"], set_={c: pg.excluded[c] for c in columns})


# -- engine -------------------------------------------------------------------------------------


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _make_engine(url: str) -> Engine:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
        if in_memory:
            # one shared connection, or every pooled connection would see its own empty database
            engine = create_engine(parsed, connect_args={"check_same_thread": False}, poolclass=StaticPool)
        else:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if backend == "postgresql":
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3, not the psycopg2 default
        return create_engine(parsed, pool_pre_ping=True)
    raise ValueError(f"unsupported metadata database {parsed.drivername!r}: use sqlite:/// or postgresql://")


class MetadataDB:
    """Cameras and alerts. Safe to share between threads: each call uses its own session."""

    def __init__(self, url: str) -> None:
        self._engine = _make_engine(url)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"MetadataDB({self._engine.url.render_as_string(hide_password=True)!r})"

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def create_schema(self) -> None:
        _Base.metadata.create_all(self._engine)

    def close(self) -> None:
        self._engine.dispose()

    # -- cameras --------------------------------------------------------------------------------
    def upsert_cameras(self, rows: list[CameraRecord]) -> None:
        """Insert new cameras and overwrite existing ones (by id), in one transaction."""
        if not rows:
            return
        for row in rows:
            _require_aware(row.updated_at, "updated_at")
        values = [_camera_values(r) for r in rows]
        with self._sessions.begin() as session:
            session.execute(_camera_upsert(self.dialect), values)

    def list_cameras(self) -> list[CameraRecord]:
        with self._sessions() as session:
            rows = session.scalars(select(_Camera).order_by(_Camera.id)).all()
            return [_camera_record(r) for r in rows]

    # -- alerts ---------------------------------------------------------------------------------
    def add_alert(self, alert: AlertRecord) -> None:
        _require_aware(alert.created_at, "created_at")
        _require_aware(alert.frame_time, "frame_time")
        if alert.clip_status not in CLIP_STATUSES:
            raise ValueError(f"clip_status {alert.clip_status!r} not in {CLIP_STATUSES}")
        row = _Alert(
            id=alert.id,
            camera_id=alert.camera_id,
            village=alert.village,
            grid=alert.grid,
            label=alert.label,
            score=float(alert.score),
            bbox=[float(v) for v in alert.bbox],
            created_at=alert.created_at,
            frame_time=alert.frame_time,
            stream_time_s=alert.stream_time_s,
            snapshot_key=alert.snapshot_key,
            clip_key=alert.clip_key,
            clip_status=alert.clip_status,
            clip_duration_s=alert.clip_duration_s,
            clip_error=_clip_error(alert.clip_error),
        )
        if len(row.bbox) != 4:
            raise ValueError(f"bbox needs 4 numbers, got {alert.bbox!r}")
        with self._sessions.begin() as session:
            session.add(row)

    def get_alert(self, alert_id: str) -> AlertRecord | None:
        with self._sessions() as session:
            row = session.get(_Alert, alert_id)
            return _alert_record(row) if row is not None else None

    def list_alerts(self, limit: int = 50, before: tuple[datetime, str] | None = None) -> list[AlertRecord]:
        """Newest first. For the next page pass `before=(last.created_at, last.id)` of the previous page."""
        if not 1 <= limit <= _MAX_PAGE:
            raise ValueError(f"limit must be 1..{_MAX_PAGE}, got {limit}")
        query = select(_Alert).order_by(_Alert.created_at.desc(), _Alert.id.desc()).limit(limit)
        if before is not None:
            at, last_id = before
            query = query.where(
                or_(_Alert.created_at < at, and_(_Alert.created_at == at, _Alert.id < last_id))
            )
        with self._sessions() as session:
            return [_alert_record(r) for r in session.scalars(query)]

    def set_clip(
        self,
        alert_id: str,
        *,
        key: str | None,
        status: str,
        duration_s: float | None = None,
        error: str | None = None,
    ) -> None:
        if status not in CLIP_STATUSES:
            raise ValueError(f"clip status {status!r} not in {CLIP_STATUSES}")
        self._update(
            alert_id,
            clip_key=key,
            clip_status=status,
            clip_duration_s=duration_s,
            clip_error=_clip_error(error),
        )

    def set_snapshot(self, alert_id: str, key: str) -> None:
        self._update(alert_id, snapshot_key=key)

    def _update(self, alert_id: str, **values: Any) -> None:
        # A lone UPDATE: on SQLite the write lock is taken by the first statement, so busy_timeout applies
        # (a read followed by a write could fail at once with SQLITE_BUSY under concurrent writers).
        with self._sessions.begin() as session:
            result = session.execute(
                update(_Alert).where(_Alert.id == alert_id).values(**values),
                execution_options={"synchronize_session": False},
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise KeyError(f"no alert {alert_id!r}")


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} is a naive datetime: the metadata database needs timezone-aware datetimes")


def _clip_error(error: str | None) -> str | None:
    if error is None or len(error) <= _MAX_ERROR_CHARS:
        return error
    return error[: _MAX_ERROR_CHARS - 3] + "..."
