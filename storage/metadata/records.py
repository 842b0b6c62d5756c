"""The frozen records the metadata database hands to callers and takes from them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal, get_args

ClipStatus = Literal["pending", "stored", "failed"]  # an alert's summary of its (first) clip
ClipFileStatus = Literal["pending", "spooled", "stored", "failed", "evicted"]  # one clip file
Role = Literal["operator", "patrol", "admin"]
AlertActionKind = Literal[
    "acknowledged", "dispatched", "on_scene", "resolved", "false_alarm", "escalated", "comment"
]
DeliveryStatus = Literal["sent", "retrying", "failed", "gone"]
Severity = Literal["low", "normal", "high", "critical"]
IncidentStatus = Literal["new", "acknowledged", "dispatched", "on_scene", "resolved", "false_alarm"]
ImageKind = Literal["snapshot", "thumbnail"]  # an alert's images (one object each, under a fixed key)
Source = Literal["config", "api"]  # 0008: where a camera, village, grid, team or user was defined
CLIP_STATUSES: tuple[str, ...] = get_args(ClipStatus)
CLIP_FILE_STATUSES: tuple[str, ...] = get_args(ClipFileStatus)
ROLES: tuple[str, ...] = get_args(Role)
ALERT_ACTIONS: tuple[str, ...] = get_args(AlertActionKind)
DELIVERY_STATUSES: tuple[str, ...] = get_args(DeliveryStatus)
SEVERITIES: tuple[str, ...] = get_args(Severity)
INCIDENT_STATUSES: tuple[str, ...] = get_args(IncidentStatus)
IMAGE_KINDS: tuple[str, ...] = get_args(ImageKind)
SOURCES: tuple[str, ...] = get_args(Source)


def new_id() -> str:
    return uuid.uuid4().hex


new_alert_id = new_id


def utcnow() -> datetime:
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
    updated_at: datetime = field(default_factory=utcnow)
    # 0008: the URLs sealed by the process's secret key (never clear text; None: not known to the database,
    # the worker has it from the config), where the camera came from, its last probe
    url_sealed: str | None = field(default=None, repr=False)
    record_url_redacted: str | None = None
    record_url_sealed: str | None = field(default=None, repr=False)
    source: Source = "config"
    probe: dict[str, Any] | None = None
    probed_at: datetime | None = None
    created_at: datetime | None = None
    # 0010: {zones, masks, motion_masks, thresholds} as the config's camera settings have them; None: none
    detection: dict[str, Any] | None = None


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
    # Sizes of the stored snapshot (the final one once a best frame replaced it) and thumbnail; None when not
    # stored, or stored before sizes were recorded (migration 0005).
    snapshot_bytes: int | None = None
    thumbnail_bytes: int | None = None
    severity: str | None = None  # the rule's: low, normal, high, critical
    rule: str | None = None  # the rule that raised it
    incident_id: str | None = None  # set by the dispatcher when the alert joins an incident
    worker_id: str | None = None  # the worker that wrote it (None: one process owns every camera)
    fence_token: int | None = None  # that worker's lease token for the camera when it wrote it


@dataclass(frozen=True, slots=True)
class RosterEntry:
    """One shift of a team's roster: the user is on duty while the (config's) schedule is active."""

    user: str
    schedule: str


@dataclass(frozen=True, slots=True)
class VillageRecord:
    id: str
    name: str
    source: Source = "config"


@dataclass(frozen=True, slots=True)
class TeamRecord:
    id: str
    name: str
    source: Source = "config"
    roster: tuple[RosterEntry, ...] = ()  # 0008: who is on duty when (schedule names of the config)


@dataclass(frozen=True, slots=True)
class GridRecord:
    id: str
    name: str
    village_id: str
    team_id: str | None = None  # the patrol team that gets this grid's alerts
    source: Source = "config"


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: str
    name: str
    role: Role
    team_id: str | None = None
    # PHC / modular-crypt string ($argon2id$..., $2b$...); never a clear password. None: cannot log in.
    password_hash: str | None = field(default=None, repr=False)
    created_at: datetime = field(default_factory=utcnow)
    # 0007: a disabled user cannot log in and its sessions and API tokens stop working. `upsert_users` never
    # changes it (the config's users are upserted at every start); `set_user_disabled` does.
    disabled: bool = False
    source: Source = "config"  # 0008


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
    incident_id: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    key: str  # notification, notifier and target: what makes a delivery happen once
    alert_id: str
    channel: str  # webpush, mqtt, webhook, wecom, dingtalk...
    target: str  # a name (team, subscription, notifier id), never a URL with its key
    status: DeliveryStatus
    attempts: int
    last_error: str | None
    at: datetime
    incident_id: str | None = None
    kind: str | None = None  # the notification's: new, update, escalation, resolved


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
    snapshot_key: str | None = None  # its images, as the row had them (None: none stored)
    snapshot_bytes: int | None = None  # None: no snapshot, or its size was not recorded
    thumbnail_key: str | None = None
    thumbnail_bytes: int | None = None


def values_of(record: Any) -> dict[str, Any]:
    return {f.name: getattr(record, f.name) for f in fields(record)}
