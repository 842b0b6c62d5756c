"""Metadata database on SQLite (one box) or PostgreSQL (many machines).

Cameras, villages, grids, teams, users, events, alerts, alert actions, clips, deliveries and the audit log.
The schema comes from the Alembic migrations in `storage/migrations` (`MetadataDB.migrate()` at start); the
ORM models in `tables` must match them, which tests/storage/test_migrations.py checks. ORM models stay inside
this package; callers get frozen records. Every call opens its own session, so one `MetadataDB` can be shared
by many threads. Secrets never land here in clear: camera URLs are stored redacted for display and sealed
(encrypted by the deployment's key, `gridwatch.secrets`) for the workers, users only with a password hash,
and a delivery target or audit detail that carries credentials is refused.

Modules: `records` (the frozen records and the choices of status fields), `tables` (the SQLAlchemy models and
`UtcDateTime`), `db` (`MetadataDB`), `incidents` (incidents, push subscriptions, rule overrides), `registry`
(cameras and the organisation, one by one or in bulk), `fences` (fencing tokens: a worker that lost a
camera's lease cannot write for it), `auth` (login sessions, API tokens, password hashes, disabled users:
hashes only), `engine` (`make_engine`), `rows` (rows to records, upserts, deleting an alert with its rows),
`checks` (what is refused before a write). Import from `storage.metadata`.
"""

from storage.metadata.auth import ApiTokenRecord, SessionRecord
from storage.metadata.db import MetadataDB
from storage.metadata.engine import make_engine
from storage.metadata.fences import Fence, FenceRecord, StaleFence
from storage.metadata.incidents import (
    IncidentAttach,
    IncidentRecord,
    PushSubscriptionRecord,
    ResponseTimes,
    RuleOverrideRecord,
)
from storage.metadata.records import (
    ALERT_ACTIONS,
    CLIP_FILE_STATUSES,
    CLIP_STATUSES,
    DELIVERY_STATUSES,
    IMAGE_KINDS,
    ROLES,
    SOURCES,
    AlertActionKind,
    AlertActionRecord,
    AlertRecord,
    AuditRecord,
    CameraRecord,
    ClipFacts,
    ClipFileStatus,
    ClipRecord,
    ClipStatus,
    DeletedAlert,
    DeliveryRecord,
    DeliveryStatus,
    EventRecord,
    GridRecord,
    ImageKind,
    IncidentStatus,
    Role,
    RosterEntry,
    Severity,
    Source,
    TeamRecord,
    UserRecord,
    VillageRecord,
    new_alert_id,
    new_id,
)
from storage.metadata.registry import KEPT_BY_CAMERAS, RowExists, RowInUse
from storage.metadata.tables import UtcDateTime, model_metadata

__all__ = [
    "ALERT_ACTIONS",
    "CLIP_FILE_STATUSES",
    "CLIP_STATUSES",
    "DELIVERY_STATUSES",
    "IMAGE_KINDS",
    "KEPT_BY_CAMERAS",
    "ROLES",
    "SOURCES",
    "AlertActionKind",
    "AlertActionRecord",
    "AlertRecord",
    "ApiTokenRecord",
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
    "Fence",
    "FenceRecord",
    "GridRecord",
    "ImageKind",
    "IncidentAttach",
    "IncidentRecord",
    "IncidentStatus",
    "MetadataDB",
    "PushSubscriptionRecord",
    "ResponseTimes",
    "Role",
    "RosterEntry",
    "RowExists",
    "RowInUse",
    "RuleOverrideRecord",
    "SessionRecord",
    "Severity",
    "Source",
    "StaleFence",
    "TeamRecord",
    "UserRecord",
    "UtcDateTime",
    "VillageRecord",
    "make_engine",
    "model_metadata",
    "new_alert_id",
    "new_id",
]
