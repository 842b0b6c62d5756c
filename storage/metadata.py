"""Metadata database on SQLite (one box) or PostgreSQL (many machines).

Cameras, villages, grids, teams, users, events, alerts, alert actions, clips, deliveries and the audit log.
The schema comes from the Alembic migrations in `storage/migrations` (`MetadataDB.migrate()` at start); the
ORM classes below must match them, which tests/storage/test_migrations.py checks. ORM classes stay inside this
module; callers get frozen records. Every call opens its own session, so one `MetadataDB` can be shared by
many threads. Secrets never land here: camera URLs are stored redacted, users only with a password hash, and a
delivery target or audit detail that carries credentials is refused.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args
from urllib.parse import urlsplit

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    and_,
    create_engine,
    delete,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql import Executable
from sqlalchemy.types import TypeDecorator

from storage import migrations

__all__ = [
    "AlertActionKind",
    "AlertActionRecord",
    "AlertRecord",
    "AuditRecord",
    "CameraRecord",
    "ClipFacts",
    "ClipFileStatus",
    "ClipRecord",
    "ClipStatus",
    "DeletedAlert",
    "DeliveryRecord",
    "DeliveryStatus",
    "EventRecord",
    "GridRecord",
    "MetadataDB",
    "Role",
    "TeamRecord",
    "UserRecord",
    "VillageRecord",
    "make_engine",
    "model_metadata",
    "new_alert_id",
    "new_id",
]

ClipStatus = Literal["pending", "stored", "failed"]  # an alert's summary of its (first) clip
ClipFileStatus = Literal["pending", "spooled", "stored", "failed", "evicted"]  # one clip file
Role = Literal["operator", "patrol", "admin"]
AlertActionKind = Literal["acknowledged", "dispatched", "resolved", "false_alarm", "escalated", "comment"]
DeliveryStatus = Literal["sent", "retrying", "failed"]
CLIP_STATUSES: tuple[str, ...] = get_args(ClipStatus)
CLIP_FILE_STATUSES: tuple[str, ...] = get_args(ClipFileStatus)
ROLES: tuple[str, ...] = get_args(Role)
ALERT_ACTIONS: tuple[str, ...] = get_args(AlertActionKind)
DELIVERY_STATUSES: tuple[str, ...] = get_args(DeliveryStatus)
_MAX_ERROR_CHARS = 2000
_MAX_PAGE = 1000
_SHA256 = re.compile(r"[0-9a-f]{64}")
# PHC / modular crypt: $argon2id$..., $2b$..., $scrypt$...
_PASSWORD_HASH = re.compile(r"\$[A-Za-z0-9-]+\$\S+")
_SECRET_KEY = re.compile(r"password|passwd|secret|token|api[_-]?key|credential", re.IGNORECASE)


def new_id() -> str:
    return uuid.uuid4().hex


new_alert_id = new_id


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
    event_id: str | None = None  # the tracked event that raised it, when the caller recorded one
    thumbnail_key: str | None = None  # the small JPEG for the feed, set once it is uploaded


@dataclass(frozen=True, slots=True)
class VillageRecord:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class TeamRecord:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class GridRecord:
    id: str
    name: str
    village_id: str
    team_id: str | None = None  # the patrol team that gets this grid's alerts


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: str
    name: str
    role: Role
    team_id: str | None = None
    # PHC / modular-crypt string ($argon2id$..., $2b$...); never a clear password. None: cannot log in.
    password_hash: str | None = field(default=None, repr=False)
    created_at: datetime = field(default_factory=_utcnow)


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One tracked object on one camera, from first sight to last."""

    id: str
    camera_id: str
    label: str
    track_id: int
    started_at: datetime
    best_score: float
    ended_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ClipFacts:
    """What the recorder knows about a clip file once it is written."""

    started_at: datetime
    duration_s: float
    size_bytes: int
    sha256: str
    codec: str


@dataclass(frozen=True, slots=True)
class ClipRecord:
    id: str
    alert_id: str
    object_key: str
    sequence: int  # 0 for the first clip of an alert, 1, 2... for continuation clips of a long event
    status: ClipFileStatus
    created_at: datetime
    started_at: datetime | None = None
    duration_s: float | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    codec: str | None = None
    stored_at: datetime | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class AlertActionRecord:
    id: int
    alert_id: str
    user_id: str | None  # None: done by the system (escalation)
    action: AlertActionKind
    note: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    alert_id: str
    channel: str  # webpush, mqtt, webhook, wecom, dingtalk...
    target: str  # a name (team, subscription, notifier id), never a URL with its key
    status: DeliveryStatus
    attempts: int
    last_error: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeletedAlert:
    """What `delete_alert` removed: the object keys whose objects the caller deletes from the store."""

    alert_id: str
    object_keys: tuple[str, ...]
    clip_bytes: int  # size_bytes of its clip rows


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


def _in(column: str, choices: tuple[str, ...], name: str) -> CheckConstraint:
    return CheckConstraint("{} IN ({})".format(column, ", ".join(f"'{c}'" for c in choices)), name=name)


class _Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        }
    )


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


class _Village(_Base):
    __tablename__ = "villages"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))


class _Team(_Base):
    __tablename__ = "teams"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))


class _Grid(_Base):
    __tablename__ = "grids"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    village_id: Mapped[str] = mapped_column(String(128), ForeignKey("villages.id"), index=True)
    team_id: Mapped[str | None] = mapped_column(String(128), ForeignKey("teams.id"), index=True)


class _User(_Base):
    __tablename__ = "users"
    __table_args__ = (_in("role", ROLES, "ck_users_role"),)

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))
    team_id: Mapped[str | None] = mapped_column(String(128), ForeignKey("teams.id"), index=True)
    password_hash: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class _Event(_Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_camera_id_started_at", "camera_id", "started_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(128))
    label: Mapped[str] = mapped_column(String(64))
    track_id: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    best_score: Mapped[float] = mapped_column(Float)


class _Alert(_Base):
    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_created_at_id", "created_at", "id"),
        Index("ix_alerts_grid_created_at", "grid", "created_at"),
        Index("ix_alerts_label_created_at", "label", "created_at"),
        _in("clip_status", CLIP_STATUSES, "ck_alerts_clip_status"),
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
    event_id: Mapped[str | None] = mapped_column(String(32), ForeignKey("events.id"), index=True)
    thumbnail_key: Mapped[str | None] = mapped_column(String(1024))


class _Clip(_Base):
    __tablename__ = "clips"
    __table_args__ = (
        _in("status", CLIP_FILE_STATUSES, "ck_clips_status"),
        CheckConstraint("sequence >= 0", name="ck_clips_sequence"),
        UniqueConstraint("alert_id", "sequence", name="uq_clips_alert_id_sequence"),
        UniqueConstraint("object_key", name="uq_clips_object_key"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(32), ForeignKey("alerts.id"))
    object_key: Mapped[str] = mapped_column(String(1024))
    sequence: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    duration_s: Mapped[float | None] = mapped_column(Float)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    codec: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    stored_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    error: Mapped[str | None] = mapped_column(Text)


class _AlertAction(_Base):
    __tablename__ = "alert_actions"
    __table_args__ = (_in("action", ALERT_ACTIONS, "ck_alert_actions_action"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(String(32), ForeignKey("alerts.id"), index=True)
    user_id: Mapped[str | None] = mapped_column(String(128), ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UtcDateTime)


class _Delivery(_Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        PrimaryKeyConstraint("alert_id", "channel", "target"),
        _in("status", DELIVERY_STATUSES, "ck_deliveries_status"),
    )

    alert_id: Mapped[str] = mapped_column(String(32), ForeignKey("alerts.id"))
    channel: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UtcDateTime)


class _Audit(_Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


def model_metadata() -> MetaData:
    """The ORM's tables, for Alembic autogenerate and the schema-drift test."""
    return _Base.metadata


# -- rows <-> records ---------------------------------------------------------------------------

R = TypeVar("R")


def _values(record: Any) -> dict[str, Any]:
    return {f.name: getattr(record, f.name) for f in fields(record)}


def _record(cls: type[R], row: Any) -> R:
    """A record from the ORM row's attributes of the same names."""
    return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})  # type: ignore[arg-type]


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
        event_id=row.event_id,
        thumbnail_key=row.thumbnail_key,
    )


def _upsert(dialect: str, model: type[_Base], keep: tuple[str, ...] = ()) -> Executable:
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


def _delivery_upsert(dialect: str) -> Executable:
    """Insert the first attempt, or count one more attempt on the existing row."""
    ins = sqlite.insert(_Delivery) if dialect == "sqlite" else postgresql.insert(_Delivery)
    return ins.on_conflict_do_update(
        index_elements=["alert_id", "channel", "target"],
        set_={
            "status": ins.excluded.status,
            "last_error": ins.excluded.last_error,
            "at": ins.excluded.at,
            "attempts": _Delivery.attempts + 1,
        },
    )


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


def make_engine(url: str) -> Engine:
    """An engine for a sqlite:/// or postgresql:// URL, set up the way GridWatch uses it."""
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
    """The metadata database. Safe to share between threads: each call uses its own session."""

    def __init__(self, url: str) -> None:
        self._engine = make_engine(url)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"MetadataDB({self._engine.url.render_as_string(hide_password=True)!r})"

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def migrate(self) -> None:
        """Upgrade the schema to the newest migration (idempotent; safe from many processes at once).

        A database made before migrations existed is adopted with its rows."""
        migrations.upgrade_to_head(self._engine)

    def create_schema(self) -> None:
        """The name callers used before migrations: the same as `migrate()`."""
        self.migrate()

    def schema_revision(self) -> str | None:
        return migrations.current_revision(self._engine)

    def close(self) -> None:
        self._engine.dispose()

    # -- cameras --------------------------------------------------------------------------------
    def upsert_cameras(self, rows: list[CameraRecord]) -> None:
        """Insert new cameras and overwrite existing ones (by id), in one transaction."""
        for row in rows:
            _require_aware(row.updated_at, "updated_at")
            _require_redacted(row.url_redacted)
        self._upsert(_Camera, [_values(r) for r in rows])

    def list_cameras(self) -> list[CameraRecord]:
        return self._list(CameraRecord, select(_Camera).order_by(_Camera.id))

    # -- villages, teams, grids, users ----------------------------------------------------------
    def upsert_villages(self, rows: list[VillageRecord]) -> None:
        self._upsert(_Village, [_values(r) for r in rows])

    def list_villages(self) -> list[VillageRecord]:
        return self._list(VillageRecord, select(_Village).order_by(_Village.id))

    def upsert_teams(self, rows: list[TeamRecord]) -> None:
        self._upsert(_Team, [_values(r) for r in rows])

    def list_teams(self) -> list[TeamRecord]:
        return self._list(TeamRecord, select(_Team).order_by(_Team.id))

    def upsert_grids(self, rows: list[GridRecord]) -> None:
        """Village and team must exist (foreign keys)."""
        self._upsert(_Grid, [_values(r) for r in rows])

    def list_grids(self, *, village_id: str | None = None, team_id: str | None = None) -> list[GridRecord]:
        query = select(_Grid).order_by(_Grid.id)
        if village_id is not None:
            query = query.where(_Grid.village_id == village_id)
        if team_id is not None:
            query = query.where(_Grid.team_id == team_id)
        return self._list(GridRecord, query)

    def upsert_users(self, rows: list[UserRecord]) -> None:
        """Insert or overwrite users by id; an existing user keeps its created_at."""
        for row in rows:
            _check_choice(row.role, ROLES, "role")
            _require_aware(row.created_at, "created_at")
            _require_password_hash(row.password_hash)
        self._upsert(_User, [_values(r) for r in rows], keep=("created_at",))

    def get_user(self, user_id: str) -> UserRecord | None:
        return self._get(UserRecord, _User, user_id)

    def list_users(self, *, team_id: str | None = None) -> list[UserRecord]:
        query = select(_User).order_by(_User.id)
        if team_id is not None:
            query = query.where(_User.team_id == team_id)
        return self._list(UserRecord, query)

    # -- events ---------------------------------------------------------------------------------
    def add_event(self, rec: EventRecord) -> None:
        _require_aware(rec.started_at, "started_at")
        if rec.ended_at is not None:
            _require_aware(rec.ended_at, "ended_at")
        with self._sessions.begin() as session:
            session.add(_Event(**_values(rec)))

    def end_event(self, event_id: str, *, ended_at: datetime, best_score: float) -> None:
        _require_aware(ended_at, "ended_at")
        self._update(_Event, _Event.id == event_id, event_id, ended_at=ended_at, best_score=best_score)

    def get_event(self, event_id: str) -> EventRecord | None:
        return self._get(EventRecord, _Event, event_id)

    def list_events(self, camera_id: str, *, limit: int = 50) -> list[EventRecord]:
        """The camera's events, newest first."""
        _check_limit(limit)
        query = (
            select(_Event)
            .where(_Event.camera_id == camera_id)
            .order_by(_Event.started_at.desc(), _Event.id.desc())
            .limit(limit)
        )
        return self._list(EventRecord, query)

    # -- alerts ---------------------------------------------------------------------------------
    def add_alert(self, alert: AlertRecord) -> None:
        _require_aware(alert.created_at, "created_at")
        _require_aware(alert.frame_time, "frame_time")
        _check_choice(alert.clip_status, CLIP_STATUSES, "clip_status")
        if len(alert.bbox) != 4:
            raise ValueError(f"bbox needs 4 numbers, got {alert.bbox!r}")
        values = _values(alert) | {
            "score": float(alert.score),
            "bbox": [float(v) for v in alert.bbox],
            "clip_error": _clip_error(alert.clip_error),
        }
        with self._sessions.begin() as session:
            session.add(_Alert(**values))

    def get_alert(self, alert_id: str) -> AlertRecord | None:
        with self._sessions() as session:
            row = session.get(_Alert, alert_id)
            return _alert_record(row) if row is not None else None

    def list_alerts(self, limit: int = 50, before: tuple[datetime, str] | None = None) -> list[AlertRecord]:
        """Newest first. For the next page pass `before=(last.created_at, last.id)` of the previous page."""
        _check_limit(limit)
        query = select(_Alert).order_by(_Alert.created_at.desc(), _Alert.id.desc()).limit(limit)
        if before is not None:
            at, last_id = before
            query = query.where(
                or_(_Alert.created_at < at, and_(_Alert.created_at == at, _Alert.id < last_id))
            )
        with self._sessions() as session:
            return [_alert_record(r) for r in session.scalars(query)]

    def list_alerts_older_than(
        self, cutoff: datetime, *, label: str | None = None, limit: int = 500
    ) -> list[AlertRecord]:
        """Alerts created before `cutoff` (of `label`, or of any label), oldest first: the retention sweep's
        candidates. Delete them and ask again for the next batch."""
        _require_aware(cutoff, "cutoff")
        _check_limit(limit)
        query = select(_Alert).where(_Alert.created_at < cutoff)
        if label is not None:
            query = query.where(_Alert.label == label)
        query = query.order_by(_Alert.created_at, _Alert.id).limit(limit)
        with self._sessions() as session:
            return [_alert_record(r) for r in session.scalars(query)]

    def delete_alert(self, alert_id: str) -> DeletedAlert | None:
        """Delete the alert with its clips, actions and deliveries in one transaction; None if it was gone.

        The audit log keeps its entries (they name the alert only as text)."""
        with self._sessions.begin() as session:
            return _delete_alert_rows(session, alert_id)

    def list_alerts_oldest(
        self,
        *,
        before: datetime | None = None,
        label: str | None = None,
        other_than: Collection[str] = (),
        after: tuple[datetime, str] | None = None,
        settled_only: bool = False,
        limit: int = 500,
    ) -> list[AlertRecord]:
        """Alerts oldest first, by (created_at, id), for the retention sweeper.

        `before`: created before it; `label`: of this label; `other_than`: of none of these labels;
        `after`: keyset paging, pass `(last.created_at, last.id)` of the previous page (rows the caller kept
        are not returned again); `settled_only`: leave out alerts whose clip is still on its way (the alert's
        clip summary "pending", or any clip row "pending" or "spooled")."""
        _check_limit(limit)
        query = select(_Alert)
        if before is not None:
            _require_aware(before, "before")
            query = query.where(_Alert.created_at < before)
        if label is not None:
            query = query.where(_Alert.label == label)
        if other_than:
            query = query.where(_Alert.label.not_in(list(other_than)))
        if after is not None:
            at, last_id = after
            _require_aware(at, "after")
            query = query.where(
                or_(_Alert.created_at > at, and_(_Alert.created_at == at, _Alert.id > last_id))
            )
        if settled_only:
            in_flight = (
                select(_Clip.id)
                .where(_Clip.alert_id == _Alert.id, _Clip.status.in_(("pending", "spooled")))
                .exists()
            )
            query = query.where(_Alert.clip_status != "pending", ~in_flight)
        query = query.order_by(_Alert.created_at, _Alert.id).limit(limit)
        with self._sessions() as session:
            return [_alert_record(r) for r in session.scalars(query)]

    def count_snapshots(self) -> int:
        """Alerts whose snapshot is in the store (a snapshot_key is set once it is uploaded)."""
        query = select(func.count()).select_from(_Alert).where(_Alert.snapshot_key.is_not(None))
        with self._sessions() as session:
            return int(session.scalar(query) or 0)

    def delete_alert_audited(
        self,
        alert_id: str,
        *,
        actor: str,
        action: str,
        details: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> DeletedAlert | None:
        """`delete_alert` and its audit entry (target `alert:{id}`) in one transaction: both or neither.

        The entry's details get `object_keys` and `clip_bytes` of what the rows referenced. None, and no
        entry, if the alert was already gone (another sweeper got there first)."""
        details = dict(details or {})
        _require_no_secret_keys(details)
        json.dumps(details)
        when = _at(at)
        with self._sessions.begin() as session:
            deleted = _delete_alert_rows(session, alert_id)
            if deleted is None:
                return None
            details |= {"object_keys": list(deleted.object_keys), "clip_bytes": deleted.clip_bytes}
            session.add(
                _Audit(at=when, actor=actor, action=action, target=f"alert:{alert_id}", details=details)
            )
            return deleted

    def set_clip(
        self,
        alert_id: str,
        *,
        key: str | None,
        status: str,
        duration_s: float | None = None,
        error: str | None = None,
    ) -> None:
        """The alert's clip summary (what the feed shows); the clip files themselves are `add_clip` rows."""
        _check_choice(status, CLIP_STATUSES, "clip status")
        self._update(
            _Alert,
            _Alert.id == alert_id,
            alert_id,
            clip_key=key,
            clip_status=status,
            clip_duration_s=duration_s,
            clip_error=_clip_error(error),
        )

    def set_snapshot(self, alert_id: str, key: str) -> None:
        self._update(_Alert, _Alert.id == alert_id, alert_id, snapshot_key=key)

    def set_thumbnail(self, alert_id: str, key: str) -> None:
        self._update(_Alert, _Alert.id == alert_id, alert_id, thumbnail_key=key)

    # -- clips ----------------------------------------------------------------------------------
    def add_clip(
        self,
        alert_id: str,
        object_key: str,
        *,
        sequence: int = 0,
        status: ClipFileStatus = "pending",
        facts: ClipFacts | None = None,
    ) -> ClipRecord:
        """A clip file of an alert; `sequence` 1, 2... for the continuation clips of a long event."""
        _check_choice(status, CLIP_FILE_STATUSES, "clip status")
        if sequence < 0:
            raise ValueError(f"sequence must be >= 0, got {sequence}")
        now = _utcnow()
        row = _Clip(
            id=new_id(),
            alert_id=alert_id,
            object_key=object_key,
            sequence=sequence,
            status=status,
            created_at=now,
            stored_at=now if status == "stored" else None,
            **(_facts_values(facts) if facts is not None else {}),
        )
        with self._sessions.begin() as session:
            session.add(row)
        return _record(ClipRecord, row)

    def update_clip(
        self,
        clip_id: str,
        status: ClipFileStatus,
        *,
        facts: ClipFacts | None = None,
        error: str | None = None,
    ) -> None:
        """Move a clip to `status`; `error` is written as given (None clears it), `stored_at` is set on
        "stored", and `facts`, when given, replace what was known."""
        _check_choice(status, CLIP_FILE_STATUSES, "clip status")
        values: dict[str, Any] = {"status": status, "error": _clip_error(error)}
        if status == "stored":
            values["stored_at"] = _utcnow()
        if facts is not None:
            values |= _facts_values(facts)
        self._update(_Clip, _Clip.id == clip_id, clip_id, **values)

    def get_clip(self, clip_id: str) -> ClipRecord | None:
        return self._get(ClipRecord, _Clip, clip_id)

    def list_clips(self, alert_id: str) -> list[ClipRecord]:
        """The alert's clips in sequence order."""
        query = select(_Clip).where(_Clip.alert_id == alert_id).order_by(_Clip.sequence)
        return self._list(ClipRecord, query)

    def stored_clip_bytes(self) -> int:
        """Total size_bytes of clips in the object store ("stored"), for retention by size."""
        query = select(func.coalesce(func.sum(_Clip.size_bytes), 0)).where(_Clip.status == "stored")
        with self._sessions() as session:
            return int(session.scalar(query) or 0)

    # -- alert actions and deliveries -----------------------------------------------------------
    def add_alert_action(
        self,
        alert_id: str,
        action: AlertActionKind,
        *,
        user_id: str | None = None,
        note: str | None = None,
        at: datetime | None = None,
    ) -> AlertActionRecord:
        _check_choice(action, ALERT_ACTIONS, "action")
        row = _AlertAction(alert_id=alert_id, user_id=user_id, action=action, note=note, at=_at(at))
        with self._sessions.begin() as session:
            session.add(row)
            session.flush()  # assigns the id
        return _record(AlertActionRecord, row)

    def list_alert_actions(self, alert_id: str) -> list[AlertActionRecord]:
        """Oldest first: the alert's story."""
        query = select(_AlertAction).where(_AlertAction.alert_id == alert_id).order_by(_AlertAction.id)
        return self._list(AlertActionRecord, query)

    def record_delivery(
        self,
        alert_id: str,
        channel: str,
        target: str,
        status: DeliveryStatus,
        *,
        error: str | None = None,
        at: datetime | None = None,
    ) -> DeliveryRecord:
        """One delivery attempt of an alert to a (channel, target): the first inserts, later ones count up."""
        _check_choice(status, DELIVERY_STATUSES, "delivery status")
        _require_no_credentials(target, "delivery target")
        values = {
            "alert_id": alert_id,
            "channel": channel,
            "target": target,
            "status": status,
            "attempts": 1,
            "last_error": _clip_error(error),
            "at": _at(at),
        }
        key = (alert_id, channel, target)
        with self._sessions.begin() as session:
            session.execute(_delivery_upsert(self.dialect), values)
            row = session.get(_Delivery, key, populate_existing=True)
            assert row is not None
            return _record(DeliveryRecord, row)

    def list_deliveries(self, alert_id: str) -> list[DeliveryRecord]:
        query = (
            select(_Delivery)
            .where(_Delivery.alert_id == alert_id)
            .order_by(_Delivery.channel, _Delivery.target)
        )
        return self._list(DeliveryRecord, query)

    # -- audit log ------------------------------------------------------------------------------
    def add_audit(
        self,
        actor: str,
        action: str,
        target: str,
        details: dict[str, Any] | None = None,
        *,
        at: datetime | None = None,
    ) -> AuditRecord:
        """Record who did what to what. `details` must be JSON and carry no secrets (refused by key name)."""
        details = dict(details or {})
        _require_no_secret_keys(details)
        json.dumps(details)  # fail here, not half-way through a flush
        row = _Audit(at=_at(at), actor=actor, action=action, target=target, details=details)
        with self._sessions.begin() as session:
            session.add(row)
            session.flush()
        return _record(AuditRecord, row)

    def list_audit(
        self, *, limit: int = 50, before_id: int | None = None, target: str | None = None
    ) -> list[AuditRecord]:
        """Newest first; for the next page pass `before_id` = the last id of the previous page."""
        _check_limit(limit)
        query = select(_Audit).order_by(_Audit.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(_Audit.id < before_id)
        if target is not None:
            query = query.where(_Audit.target == target)
        return self._list(AuditRecord, query)

    # -- helpers --------------------------------------------------------------------------------
    def _upsert(self, model: type[_Base], values: list[dict[str, Any]], keep: tuple[str, ...] = ()) -> None:
        if values:
            with self._sessions.begin() as session:
                session.execute(_upsert(self.dialect, model, keep), values)

    def _get(self, cls: type[R], model: type[_Base], key: str) -> R | None:
        with self._sessions() as session:
            row = session.get(model, key)
            return _record(cls, row) if row is not None else None

    def _list(self, cls: type[R], query: Any) -> list[R]:
        with self._sessions() as session:
            return [_record(cls, r) for r in session.scalars(query)]

    def _update(self, model: type[_Base], where: Any, key: str, **values: Any) -> None:
        # A lone UPDATE: on SQLite the write lock is taken by the first statement, so busy_timeout applies
        # (a read followed by a write could fail at once with SQLITE_BUSY under concurrent writers).
        with self._sessions.begin() as session:
            result = session.execute(
                update(model).where(where).values(**values),
                execution_options={"synchronize_session": False},
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise KeyError(f"no {model.__tablename__} row {key!r}")


def _delete_alert_rows(session: Session, alert_id: str) -> DeletedAlert | None:
    """The alert with its clip rows, actions and deliveries, inside the caller's transaction."""
    # writes first: on SQLite the first statement takes the write lock, so busy_timeout applies
    clips = session.execute(
        delete(_Clip).where(_Clip.alert_id == alert_id).returning(_Clip.object_key, _Clip.size_bytes)
    ).all()
    session.execute(delete(_AlertAction).where(_AlertAction.alert_id == alert_id))
    session.execute(delete(_Delivery).where(_Delivery.alert_id == alert_id))
    alert = session.execute(
        delete(_Alert)
        .where(_Alert.id == alert_id)
        .returning(_Alert.snapshot_key, _Alert.clip_key, _Alert.thumbnail_key)
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
    )


def _facts_values(facts: ClipFacts) -> dict[str, Any]:
    _require_aware(facts.started_at, "started_at")
    if not _SHA256.fullmatch(facts.sha256):
        raise ValueError(f"sha256 must be 64 lowercase hex digits, got {facts.sha256!r}")
    if facts.size_bytes < 0 or facts.duration_s < 0:
        raise ValueError(f"negative clip size or duration: {facts!r}")
    return _values(facts)


def _at(at: datetime | None) -> datetime:
    if at is None:
        return _utcnow()
    _require_aware(at, "at")
    return at


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise ValueError(f"{what} {value!r} not in {choices}")


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= _MAX_PAGE:
        raise ValueError(f"limit must be 1..{_MAX_PAGE}, got {limit}")


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} is a naive datetime: the metadata database needs timezone-aware datetimes")


def _require_redacted(url: str) -> None:
    """A camera URL may keep its user name, not its password (ingest.urls.redact_url writes ***)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password not in (None, "", "***"):
        raise ValueError("camera URL carries a password: store ingest.urls.redact_url(url)")


def _require_no_credentials(value: str, what: str) -> None:
    """Webhook, robot and push endpoint URLs carry their secret (key=..., a token in the path)."""
    if "://" in value:
        raise ValueError(f"{what} is a URL, which may carry credentials: store a name (team, notifier id)")


def _require_no_secret_keys(details: Any, path: str = "details") -> None:
    if isinstance(details, dict):
        for key, value in details.items():
            if _SECRET_KEY.search(str(key)):
                raise ValueError(f"{path}[{key!r}]: secrets do not go into the audit log")
            _require_no_secret_keys(value, f"{path}[{key!r}]")
    elif isinstance(details, list | tuple):
        for i, value in enumerate(details):
            _require_no_secret_keys(value, f"{path}[{i}]")


def _require_password_hash(value: str | None) -> None:
    if value is not None and (len(value) > 512 or not _PASSWORD_HASH.fullmatch(value)):
        raise ValueError("password_hash must be a PHC / modular-crypt hash ($argon2id$...), not a password")


def _clip_error(error: str | None) -> str | None:
    if error is None or len(error) <= _MAX_ERROR_CHARS:
        return error
    return error[: _MAX_ERROR_CHARS - 3] + "..."
