"""The SQLAlchemy models of the metadata tables; they must match the Alembic migrations in
`storage/migrations` (tests/storage/test_migrations.py checks). Only this package uses them: callers get the
frozen records of `storage.metadata.records`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from storage.metadata.records import (
    ALERT_ACTIONS,
    CLIP_FILE_STATUSES,
    CLIP_STATUSES,
    DELIVERY_STATUSES,
    INCIDENT_STATUSES,
    ROLES,
    SEVERITIES,
)


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


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        }
    )


class CameraRow(Base):
    __tablename__ = "cameras"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    village: Mapped[str] = mapped_column(String(128), index=True)
    grid: Mapped[str] = mapped_column(String(128), index=True)
    url_redacted: Mapped[str] = mapped_column(String(2048))
    detect_fps: Mapped[float] = mapped_column(Float)
    enabled: Mapped[bool]
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # 0008
    url_sealed: Mapped[str | None] = mapped_column(Text)
    record_url_redacted: Mapped[str | None] = mapped_column(String(2048))
    record_url_sealed: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16), default="config", server_default="config", index=True)
    probe: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    probed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # 0010: zones, masks, motion masks, per-label thresholds (JSON, as the config's camera settings)
    detection: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class VillageRow(Base):
    __tablename__ = "villages"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    source: Mapped[str] = mapped_column(String(16), default="config", server_default="config")  # 0008


class TeamRow(Base):
    __tablename__ = "teams"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    source: Mapped[str] = mapped_column(String(16), default="config", server_default="config")  # 0008
    roster: Mapped[list[dict[str, str]] | None] = mapped_column(JSON)  # 0008: [{user, schedule}]


class GridRow(Base):
    __tablename__ = "grids"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    village_id: Mapped[str] = mapped_column(String(128), ForeignKey("villages.id"), index=True)
    team_id: Mapped[str | None] = mapped_column(String(128), ForeignKey("teams.id"), index=True)
    source: Mapped[str] = mapped_column(String(16), default="config", server_default="config")  # 0008


class UserRow(Base):
    __tablename__ = "users"
    __table_args__ = (_in("role", ROLES, "ck_users_role"),)

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))
    team_id: Mapped[str | None] = mapped_column(String(128), ForeignKey("teams.id"), index=True)
    password_hash: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # 0007
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    source: Mapped[str] = mapped_column(String(16), default="config", server_default="config")  # 0008


class SessionRow(Base):
    """A login session (0007). Its id is the sha256 of the cookie's token; the token is never stored."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))  # random; the user's page knows it (not a secret)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    user_agent: Mapped[str | None] = mapped_column(String(256))
    ip: Mapped[str | None] = mapped_column(String(64))


class ApiTokenRow(Base):
    """An API token (0007), stored as the sha256 of the token; `prefix` is the token's public part."""

    __tablename__ = "api_tokens"
    __table_args__ = (UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class EventRow(Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_camera_id_started_at", "camera_id", "started_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(128))
    label: Mapped[str] = mapped_column(String(64))
    track_id: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    best_score: Mapped[float] = mapped_column(Float)


class AlertRow(Base):
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
    # 0005: sizes of the stored images, and since when an image is waiting in a spool (NULL: none is). The
    # pipeline sets *_pending_since before it spools an image and the upload's confirmation clears it, so
    # retention keeps the alert until nothing of it can still land in the store.
    snapshot_bytes: Mapped[int | None] = mapped_column(BigInteger)
    thumbnail_bytes: Mapped[int | None] = mapped_column(BigInteger)
    snapshot_pending_since: Mapped[datetime | None] = mapped_column(UtcDateTime)
    thumbnail_pending_since: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # 0006
    severity: Mapped[str | None] = mapped_column(String(16))
    rule: Mapped[str | None] = mapped_column(String(128))
    incident_id: Mapped[str | None] = mapped_column(String(32), ForeignKey("incidents.id"), index=True)
    # 0009: the worker that wrote it and its lease's fencing token (NULL: one process owns every camera)
    worker_id: Mapped[str | None] = mapped_column(String(128))
    fence_token: Mapped[int | None] = mapped_column(BigInteger)


class CameraFenceRow(Base):
    """The highest lease token that has claimed a camera in this database (0009): a write with a lower one
    comes from a worker that lost the camera, and is refused."""

    __tablename__ = "camera_fences"

    camera_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    token: Mapped[int] = mapped_column(BigInteger)
    worker_id: Mapped[str] = mapped_column(String(128))
    claimed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class IncidentRow(Base):
    __tablename__ = "incidents"
    __table_args__ = (
        Index("ix_incidents_grid_category_status", "grid", "category", "status"),
        Index("ix_incidents_status_opened_at", "status", "opened_at"),
        _in("severity", SEVERITIES, "ck_incidents_severity"),
        _in("status", INCIDENT_STATUSES, "ck_incidents_status"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    category: Mapped[str] = mapped_column(String(64))  # the label group: fire (fire, smoke), vehicle, person
    label: Mapped[str] = mapped_column(String(64))  # the first alert's
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    village: Mapped[str] = mapped_column(String(128))
    grid: Mapped[str] = mapped_column(String(128))
    team: Mapped[str | None] = mapped_column(String(128))
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    last_alert_at: Mapped[datetime] = mapped_column(UtcDateTime)
    alert_count: Mapped[int] = mapped_column(Integer)
    cameras: Mapped[list[str]] = mapped_column(JSON)
    first_alert_id: Mapped[str] = mapped_column(String(32))
    escalation_level: Mapped[int] = mapped_column(Integer)
    escalated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    dispatched_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    on_scene_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class PushSubscriptionRow(Base):
    __tablename__ = "push_subscriptions"
    __table_args__ = (UniqueConstraint("endpoint", name="uq_push_subscriptions_endpoint"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    endpoint: Mapped[str] = mapped_column(String(2048))
    subscription: Mapped[str] = mapped_column(Text)  # the browser's JSON (endpoint and keys)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RuleOverrideRow(Base):
    __tablename__ = "rule_overrides"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_by: Mapped[str] = mapped_column(String(128))


class ClipRow(Base):
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


class AlertActionRow(Base):
    __tablename__ = "alert_actions"
    __table_args__ = (_in("action", ALERT_ACTIONS, "ck_alert_actions_action"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(String(32), ForeignKey("alerts.id"), index=True)
    user_id: Mapped[str | None] = mapped_column(String(128), ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    incident_id: Mapped[str | None] = mapped_column(String(32), index=True)


class DeliveryRow(Base):
    __tablename__ = "deliveries"
    __table_args__ = (_in("status", DELIVERY_STATUSES, "ck_deliveries_status"),)

    # 0006: one row per (notification, notifier, target); a redelivered bus entry finds it and sends nothing
    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(32), ForeignKey("alerts.id"), index=True)
    incident_id: Mapped[str | None] = mapped_column(String(32), index=True)
    kind: Mapped[str | None] = mapped_column(String(16))  # new, update, escalation, resolved
    channel: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UtcDateTime)


class AuditRow(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


def model_metadata() -> MetaData:
    """The ORM's tables, for Alembic autogenerate and the schema-drift test."""
    return Base.metadata
