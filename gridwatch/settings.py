"""GridWatch configuration: YAML validated by pydantic, with GRIDWATCH_... environment overrides.

Every section is a small model that rejects unknown keys. `load_settings(path)` reads the YAML file, applies
environment overrides (`GRIDWATCH_REDIS__URL=...`, `GRIDWATCH_S3__SECRET_KEY=...`; `__` separates levels) and
raises `ConfigError` whose message names the file, the line and the key of every problem.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from alerts.notifiers.settings import NotifierSettings
from gridwatch.alerting_settings import (
    IncidentSettings,
    RoutingSettings,
    ScheduleSettings,
    TeamSettings,
    UserSettings,
    check_timezone,
)
from ingest.urls import CameraURLError, validate_camera_url

ENV_PREFIX = "GRIDWATCH_"
# Variables of the command-line tools, not config overrides.
TOOL_VARIABLES = frozenset({"GRIDWATCH_CONFIG", "GRIDWATCH_MODELS_DIR", "GRIDWATCH_MEDIA_DIR"})
SIM_SCHEME = "sim://"


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message says where and why."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedisSettings(Section):
    url: SecretStr | None = Field(
        None,
        description="redis://... of an external Redis, or redis+sentinel://host:26379[,host:port...]/SERVICE "
        "to follow the primary Redis Sentinel names; empty: run an embedded one",
    )
    stream: str = Field("gridwatch:alerts", description="Redis stream that carries alerts")
    stream_maxlen: int = Field(100_000, ge=100, description="Approximate MAXLEN the stream is trimmed to")
    embedded_appendfsync: Literal["always", "everysec", "no"] = Field(
        "everysec",
        description="AOF fsync policy of the embedded Redis (always on AOF): everysec survives a crash or "
        "kill of Redis and loses at most about a second of writes on a power cut; always loses none but "
        "fsyncs every write",
    )
    outbox_max_items: int = Field(
        100_000,
        ge=1000,
        description="Alerts kept in the local outbox (data_dir/outbox.db) while Redis is unreachable; "
        "beyond it the oldest are dropped (logged as errors)",
    )
    publish_timeout_s: float = Field(
        1.0, gt=0, le=10, description="How long publishing an alert may wait for Redis before queueing it"
    )


class S3Settings(Section):
    endpoint: str | None = Field(
        None, description="host:port of an external S3 store; empty: embedded SeaweedFS"
    )
    access_key: str = Field("gridwatch", description="S3 access key")
    secret_key: SecretStr = Field(SecretStr("gridwatch-secret"), description="S3 secret key")
    bucket: str = Field(
        "gridwatch", min_length=3, max_length=63, description="Bucket for clips and snapshots"
    )
    secure: bool = Field(False, description="Use HTTPS to reach the store")
    region: str | None = Field(None, description="S3 region, if the store needs one")
    presign_seconds: int = Field(
        300, ge=10, le=86_400, description="Lifetime of presigned clip/snapshot URLs"
    )


class DatabaseSettings(Section):
    url: SecretStr | None = Field(
        None, description="SQLAlchemy URL; empty: SQLite file in the data directory"
    )


class ApiSettings(Section):
    enabled: bool = Field(True, description="Serve the HTTP API from `gridwatch run`")
    host: Literal["127.0.0.1", "localhost", "::1", "0.0.0.0", "::"] = Field(
        "127.0.0.1",
        description="Bind address: loopback, with phones and other machines reaching it through a TLS "
        "reverse proxy on the same machine; 0.0.0.0 or :: only in a container or pod behind such a proxy, "
        "and then public_url must be https://",
    )
    port: int = Field(8080, ge=0, le=65535, description="TCP port; 0 picks a free one")
    public_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s]+$",
        description="Address people reach the web UI at (links in notifications); empty: no links",
    )

    @model_validator(mode="after")
    def _public_bind_behind_tls(self) -> ApiSettings:
        if self.host in ("0.0.0.0", "::") and not (self.public_url or "").startswith("https://"):
            raise ValueError(
                f"api.host {self.host} listens on every interface: only behind a TLS reverse proxy, so set "
                "api.public_url to its https:// address (sessions and passwords must not cross a network "
                "in clear)"
            )
        return self


class WorkerSettings(Section):
    """`gridwatch worker`: a detection worker of a split deployment; workers share the cameras through leases
    in Redis."""

    id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
        description="Stable worker id (in Kubernetes: the pod name); empty: host name and process id",
    )
    capacity: int = Field(
        64,
        ge=1,
        le=2000,
        description="Most cameras this worker takes; with capacity_mode measured, the measured capacity "
        "stays at or below it",
    )
    capacity_mode: Literal["measured", "fixed"] = Field(
        "measured",
        description="measured: the worker times its models at start and its detector's load while it runs, "
        "and takes no more cameras than it can serve (gridwatch.cluster.capacity); fixed: always `capacity`",
    )
    target_load: float = Field(
        0.75, gt=0, le=1, description="measured: the share of the detector's time the held cameras may take"
    )
    expected_activity: float = Field(
        0.25,
        ge=0,
        le=1,
        description="measured: the share of the time something moves in a camera's view, assumed at start "
        "(still cameras cost one frame per models.still_refresh_s); replaced by the measured load after 5 "
        "windows",
    )
    capacity_window_s: float = Field(
        60.0, ge=5, le=3600, description="measured: each capacity measurement spans this long"
    )
    lease_ttl_s: float = Field(
        10.0, ge=1, le=300, description="A dead worker's cameras move to others after this (plus 2 s at most)"
    )
    lease_replicas: int = Field(
        0,
        ge=0,
        le=10,
        description="With Redis replicas (Sentinel): a lease counts only once this many replicas have it "
        "(WAIT after each acquire and renewal), so a failover cannot give a camera to a second worker; 0: "
        "do not wait. A worker whose replicas stay silent stops its cameras at their last confirmed deadline",
    )
    lease_replica_timeout_ms: int = Field(
        100, ge=1, le=5000, description="How long each WAIT for the replicas may take"
    )
    join_settle_s: float = Field(
        3.0,
        ge=0,
        le=300,
        description="A starting worker takes cameras once the live workers stayed the same this long (at "
        "most 10 times this): a whole fleet starting does not start every camera twice",
    )
    metrics_host: Literal["127.0.0.1", "localhost", "::1", "0.0.0.0", "::"] = Field(
        "127.0.0.1", description="Bind address of /healthz, /readyz and /metrics (0.0.0.0 in a pod)"
    )
    metrics_port: int = Field(9108, ge=0, le=65535, description="Their port; 0 picks a free one")
    stop_grace_s: float = Field(
        30.0, ge=0, le=600, description="At SIGTERM: how long clips may take to finish before leases go"
    )


CustomBackend = Literal["onnxruntime", "openvino", "ultralytics"]
CUSTOM_SUFFIXES = {".onnx": "onnxruntime", ".pt": "ultralytics"}


class CustomModelSettings(Section):
    """A user's YOLOv8/YOLO11 detector, run after the built-in models; its class names become rule labels."""

    path: Path = Field(
        ...,
        description="A .onnx (ultralytics export, no NMS) or .pt file, relative to the working directory",
    )
    backend: CustomBackend | None = Field(
        None,
        description="onnxruntime, openvino (for .onnx) or ultralytics (for .pt: slower, loads torch into the "
        "process); empty: onnxruntime for .onnx, ultralytics for .pt",
    )
    score: float = Field(0.35, gt=0, le=1, description="Minimum score kept from this model")
    labels: list[str] | None = Field(
        None, min_length=1, description="Class names to keep (others are dropped); empty: all"
    )
    names: list[str] | None = Field(
        None, min_length=1, description="Class names in class order, replacing those stored in the model"
    )
    threads: int | None = Field(None, ge=1, le=64, description="Inference threads; empty: models.threads")

    @model_validator(mode="after")
    def _usable(self) -> CustomModelSettings:
        suffix = self.path.suffix.lower()
        if suffix not in CUSTOM_SUFFIXES:
            raise ValueError(f"{self.path}: a custom model must be a .onnx or .pt file")
        if suffix == ".pt" and self.resolved_backend != "ultralytics":
            raise ValueError(
                f"{self.path} is a PyTorch checkpoint: use backend ultralytics, or export it to ONNX "
                "(`yolo export model=... format=onnx dynamic=True`) for onnxruntime or openvino"
            )
        if suffix == ".onnx" and self.resolved_backend == "ultralytics":
            raise ValueError(f"{self.path}: an ONNX model runs on onnxruntime or openvino, not ultralytics")
        if not self.path.is_file():
            raise ValueError(f"custom model file {self.path} not found")
        if self.names is not None and len(set(self.names)) != len(self.names):
            raise ValueError(f"{self.path}: names must be unique")
        if self.labels is not None and self.names is not None:
            unknown = sorted(set(self.labels) - set(self.names))
            if unknown:
                raise ValueError(f"{self.path}: labels {unknown} are not among names {self.names}")
        return self

    @property
    def resolved_backend(self) -> CustomBackend:
        if self.backend is not None:
            return self.backend
        return "ultralytics" if self.path.suffix.lower() == ".pt" else "onnxruntime"


class ModelSettings(Section):
    dir: Path = Field(Path(".cache/models"), description="Model cache filled by `gridwatch models prepare`")
    threads: int = Field(1, ge=1, le=64, description="Inference threads per model (intra-op)")
    objects_score: float = Field(0.35, gt=0, le=1, description="Minimum score kept from the object detector")
    fire_score: float = Field(0.35, gt=0, le=1, description="Minimum score kept from the fire/smoke detector")
    fire_enabled: bool = Field(True, description="Run the fire/smoke detector")
    fire_imgsz: int = Field(
        640,
        ge=160,
        le=1280,
        multiple_of=32,
        description="Input size of the fire/smoke model (trained at 640; 416 costs about 40 % of it, "
        "see docs/PERFORMANCE.md and docs/ACCURACY.md)",
    )
    objects_backend: Literal["onnxruntime", "openvino"] = Field(
        "onnxruntime", description="Inference backend of the object detector"
    )
    fire_backend: Literal["onnxruntime", "openvino"] = Field(
        "onnxruntime", description="Inference backend of the fire/smoke detector"
    )
    precision: Literal["f32", "bf16"] = Field(
        "f32", description="OpenVINO precision hint: bf16 is about twice as fast on CPUs that support it"
    )
    batch_size: int = Field(4, ge=1, le=64, description="Frames of different cameras run in one model call")
    inference_workers: int = Field(
        2,
        ge=1,
        le=64,
        description="Model calls run in parallel (the models, and the halves of a batch, on this many "
        "threads; each call uses `threads` threads): about one per core",
    )
    still_refresh_s: float = Field(
        10.0, gt=0, description="Run the detectors on a camera where nothing moves at least this often"
    )
    still_refresh_max_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Put the still refresh off up to this long while the picture has not changed since "
        "the camera's last run (a 32x24 grey thumbnail compared cell by cell)",
    )
    batch_timeout_s: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Wait this long for other cameras' frames to fill a batch (0: run what is there; "
        "batching saves no time per frame on CPU, see docs/PERFORMANCE.md)",
    )
    region_crops: bool = Field(
        True,
        description="Run the object models on crops around small motion regions, where that makes small, "
        "far objects reach the model larger (whole frame otherwise, and at least every still_refresh_s)",
    )
    max_crops: int = Field(2, ge=1, le=8, description="Crops per frame at most (each is one model input)")
    custom: list[CustomModelSettings] = Field(
        default_factory=list, description="Your own YOLOv8/YOLO11 detectors, run after the built-in models"
    )


class IngestSettings(Section):
    open_timeout_s: float = Field(10.0, gt=0, le=120, description="Give up opening a camera after this long")
    registry_poll_s: float = Field(
        5.0, gt=0, le=300, description="How often a worker looks for cameras added, changed or removed (API)"
    )
    read_timeout_s: float = Field(10.0, gt=0, le=120, description="FFmpeg read timeout on an open stream")
    stall_after_s: float = Field(3.0, gt=0, le=120, description="No packet this long: the stream is stalled")
    watchdog_timeout_s: float = Field(
        10.0, gt=0, le=600, description="No packet this long: drop the connection and reconnect"
    )
    backoff_initial_s: float = Field(1.0, gt=0, le=60, description="First reconnect delay")
    backoff_max_s: float = Field(30.0, gt=0, le=600, description="Longest reconnect delay")
    stable_after_s: float = Field(60.0, gt=0, description="Connected this long: reconnect delay starts over")
    auth_backoff_s: float = Field(60.0, ge=60, description="Reconnect delay after a refused password")
    keyframes_when_idle: bool = Field(True, description="Decode only keyframes while nothing moves")
    active_hold_s: float = Field(10.0, gt=0, description="Full decode this long after motion or an alert")
    idle_keyframe_interval_s: float = Field(
        2.0, ge=0, le=60, description="While idle, decode a keyframe at most this often (0: every keyframe)"
    )
    wake_ratio: float = Field(
        3.0,
        ge=0,
        le=100,
        description="Idle P-frames this many times larger than a still one switch to full decode at once "
        "(a motion cue read off the compressed stream; 0: off)",
    )
    wake_hold_s: float = Field(2.0, gt=0, le=60, description="Full decode this long after such a wake")

    @field_validator("wake_ratio")
    @classmethod
    def _ratio_above_one(cls, value: float) -> float:
        if 0 < value <= 1:
            raise ValueError("wake_ratio must be 0 (off) or above 1")
        return value


class ClipSettings(Section):
    """A clip records its event: from the pre-roll before the alert until the post-roll after the event's
    object was last seen, cut into continuation clips of at most `max_clip_s`."""

    pre_roll_s: float = Field(5.0, ge=0, le=60, description="Seconds of video kept before the alert")
    post_roll_s: float = Field(
        5.0, ge=0, le=300, description="Seconds of video kept after the event's object was last seen"
    )
    max_clip_s: float = Field(
        120.0,
        ge=2,
        le=3600,
        description="Longest clip file; a longer event goes on in continuation clips (cut at keyframes)",
    )
    thumbnail_width: int = Field(
        320, ge=32, le=1920, description="Width in pixels of the alert's thumbnail JPEG for the feed"
    )
    best_frame_memory_mb: int = Field(
        256,
        ge=0,
        description="Most MiB the full-resolution best frames of all open events hold together (each kept "
        "to replace its alert's snapshot at the event's end); above it the oldest are written out early "
        "(0: no limit)",
    )

    @model_validator(mode="after")
    def _pre_roll_fits(self) -> ClipSettings:
        if self.max_clip_s <= self.pre_roll_s:
            raise ValueError("max_clip_s must be longer than pre_roll_s (the first clip holds the pre-roll)")
        return self


class SpoolSettings(Section):
    """The on-disk spool every clip and snapshot passes through on its way to the object store."""

    dir: Path | None = Field(
        None, description="Spool directory (tmp/, ready/, failed/); empty: `spool` under the data directory"
    )
    quota_mb: int = Field(
        2048,
        ge=1,
        description="Most MiB of clips and snapshots waiting for upload; beyond it the oldest are evicted",
    )
    retry_initial_s: float = Field(1.0, gt=0, le=60, description="First wait before retrying a failed upload")
    retry_max_s: float = Field(60.0, gt=0, le=3600, description="Longest wait between upload retries")
    stop_grace_s: float = Field(
        5.0, ge=0, le=300, description="At shutdown, keep uploading this long; the rest waits on disk"
    )

    @model_validator(mode="after")
    def _backoff(self) -> SpoolSettings:
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_max_s must be at least retry_initial_s")
        return self


class RetentionSettings(Section):
    """Our own sweeper deletes old alerts with their clips and snapshots, keeping rows and objects consistent
    (server lifecycle rules are not enforced reliably): by age per label, and oldest first, whatever the
    label, while the stored total is above `max_total_gb`. The fields other than `enabled` are those of
    `storage.retention.RetentionPolicy`: `RetentionPolicy(**settings.model_dump(exclude={"enabled"}))`."""

    enabled: bool = Field(
        True, description="Run the retention sweeper (off: nothing is ever deleted, the store only grows)"
    )
    max_age_days: dict[str, float] = Field(
        default_factory=lambda: {"fire": 365.0, "smoke": 365.0},
        description="Days alerts of a label are kept, e.g. {person: 30, fire: 365}",
    )
    default_max_age_days: float = Field(
        30.0, gt=0, description="Days alerts of labels not in max_age_days are kept"
    )
    max_total_gb: float | None = Field(
        None,
        gt=0,
        description="Most GiB of clips and snapshots kept; above it the oldest alerts are deleted first, "
        "whatever their label (empty: no size limit)",
    )
    interval_s: float = Field(3600.0, ge=10, le=7 * 86_400, description="Seconds between sweeps")
    snapshot_bytes: int = Field(
        200_000,
        ge=0,
        le=100_000_000,
        description="Bytes a stored snapshot counts for in the total when its size is not recorded (sizes "
        "are recorded since migration 0005; the estimate is for snapshots stored before)",
    )
    thumbnail_bytes: int = Field(
        20_000,
        ge=0,
        le=100_000_000,
        description="Bytes a stored thumbnail counts for in the total when its size is not recorded "
        "(thumbnails stored before migration 0005)",
    )
    batch_size: int = Field(500, ge=1, le=1000, description="Alerts fetched per query during a sweep")
    max_alerts_per_sweep: int = Field(
        5000, ge=1, description="Most alerts one sweep deletes; the next sweep follows at once"
    )

    @field_validator("max_age_days")
    @classmethod
    def _ages_positive(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [label for label, days in value.items() if not label or not days > 0]
        if bad:
            raise ValueError(f"max ages must be > 0 days, with a label; not so for {bad}")
        return value


class RuleSettings(Section):
    name: str = Field(..., min_length=1, description="Rule name shown with its alerts")
    labels: list[str] = Field(..., min_length=1, description="Detector labels that raise this alert")
    min_score: float = Field(0.5, gt=0, le=1, description="Minimum detection score")
    cooldown_s: float = Field(60.0, ge=0, description="Quiet time per camera and label after an alert")
    cameras: list[str] | None = Field(None, description="Camera ids this rule applies to; empty: all")
    villages: list[str] | None = Field(None, description="Village ids this rule applies to; empty: all")
    grids: list[str] | None = Field(None, description="Grid ids this rule applies to; empty: all")
    schedules: list[str] | None = Field(
        None, description="Schedule names: the rule is armed while any of them is; empty: always"
    )
    severity: Literal["low", "normal", "high", "critical"] | None = Field(
        None, description="Severity of its alerts; empty: critical for fire and smoke, else normal"
    )
    enabled: bool = Field(True, description="A disabled rule raises nothing")
    zones: list[str] | None = Field(
        None,
        description="Zone names: the object must stand (box bottom centre) in one of them; empty: anywhere",
    )
    min_area: float = Field(0.0, ge=0, lt=1, description="Smallest box, as a fraction of the frame area")
    dwell_s: float = Field(0.0, ge=0, description="Seconds the object must stay in the zone (loitering)")
    min_hits: int = Field(2, ge=1, le=100, description="Detections of the same object before it may alert")
    moving_only: bool | None = Field(
        None,
        description="Alert only on objects that have travelled since first seen (a person who walked in, a "
        "car that drove up; not a car parked there when the camera started); default: true, except for rules "
        "on fire or smoke, which flicker in place",
    )
    window: int = Field(
        0,
        ge=0,
        le=100,
        description="k of n: min_hits detections within the camera's last `window` detector runs "
        "(fire/smoke confirmation); 0: min_hits detections since the object appeared",
    )
    label_min_score: dict[str, float] = Field(
        default_factory=dict, description="Per-label minimum score, instead of min_score (e.g. {car: 0.7})"
    )
    label_min_area: dict[str, float] = Field(
        default_factory=dict,
        description="Per-label smallest box (fraction of the frame), instead of min_area",
    )
    min_growth: float = Field(
        0.0,
        ge=0,
        le=100,
        description="Fire confirmation, alternative cue: the object's box has grown this many times since it "
        "was first seen (spreading smoke); 0: not used. An object alerts with either cue",
    )
    min_flicker: float = Field(
        0.0,
        ge=0,
        le=255,
        description="Fire confirmation: mean grey-level change (0-255) inside the object's box between its "
        "detections; flames flicker, floodlights and glare do not (4 is a good start for fire and smoke)",
    )


class LabelThresholdSettings(Section):
    min_score: float = Field(0.0, ge=0, le=1, description="This camera's minimum score for the label")
    min_area: float = Field(0.0, ge=0, lt=1, description="This camera's smallest box (fraction of the frame)")


class VillageSettings(Section):
    id: str = Field(..., pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="Stable village id")
    name: str = Field(..., min_length=1, description="Display name")


class GridSettings(Section):
    id: str = Field(..., pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="Stable grid id")
    name: str = Field(..., min_length=1, description="Display name")
    village: str = Field(..., description="Village id this grid belongs to")
    team: str | None = Field(None, description="Team id of the grid's patrol team; empty: the fallback team")


Point = tuple[float, float]


class ZoneSettings(Section):
    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="Zone name used by rules")
    polygon: list[Point] = Field(
        ..., min_length=3, description="Points [x, y] in 0..1 of the frame width and height"
    )

    @field_validator("polygon")
    @classmethod
    def _inside_frame(cls, points: list[Point]) -> list[Point]:
        for x, y in points:
            if not (0 <= x <= 1 and 0 <= y <= 1):
                raise ValueError(f"point [{x}, {y}] is outside the frame (coordinates go from 0 to 1)")
        return points


class CameraDetection(Section):
    """Where and how strictly a camera's detections count: the config's camera settings, and the
    `detection` of a camera registered through the API (stored with it in the database)."""

    zones: list[ZoneSettings] = Field(default_factory=list, description="Named areas that rules can require")
    masks: list[list[Point]] = Field(
        default_factory=list, description="Polygons (0..1) where detections and motion are ignored"
    )
    motion_masks: list[list[Point]] = Field(
        default_factory=list,
        description="Polygons (0..1) where motion is ignored (trees, flags, a busy road behind the area) "
        "but detections still count",
    )
    thresholds: dict[str, LabelThresholdSettings] = Field(
        default_factory=dict,
        description="Per-label bars for this camera, {label: {min_score, min_area}}; the stricter of these "
        "and the rule's applies",
    )

    @field_validator("masks", "motion_masks")
    @classmethod
    def _polygons(cls, polygons: list[list[Point]]) -> list[list[Point]]:
        for polygon in polygons:
            if len(polygon) < 3:
                raise ValueError(f"a mask needs at least 3 points, not {len(polygon)}")
            for x, y in polygon:
                if not (0 <= x <= 1 and 0 <= y <= 1):
                    raise ValueError(f"point [{x}, {y}] is outside the frame (coordinates go from 0 to 1)")
        return polygons

    @field_validator("zones")
    @classmethod
    def _unique_zones(cls, zones: list[ZoneSettings]) -> list[ZoneSettings]:
        names = [z.name for z in zones]
        if twice := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"zone names must be unique: {', '.join(twice)} more than once")
        return zones

    def is_empty(self) -> bool:
        return not (self.zones or self.masks or self.motion_masks or self.thresholds)


class CameraSettings(CameraDetection):
    id: str = Field(..., pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="Stable camera id (used in keys)")
    name: str = Field(..., min_length=1, description="Display name")
    village: str = Field(..., description="Village id")
    grid: str = Field(..., description="Grid id (the patrol team that gets its alerts)")
    url: SecretStr = Field(
        ..., description="rtsp:// or rtsps:// URL decoded for detection (a sub-stream if the camera has one)"
    )
    record_url: SecretStr | None = Field(
        None, description="Main stream kept (not decoded) for clips; empty: clips come from `url`"
    )
    detect_fps: float = Field(2.0, gt=0, le=30, description="Frames per second sent to the detectors")
    enabled: bool = Field(True, description="Pull this camera")

    @field_validator("url", "record_url")
    @classmethod
    def _camera_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        if raw.startswith(SIM_SCHEME):
            return value
        try:
            validate_camera_url(raw)
        except CameraURLError as exc:
            raise ValueError(str(exc)) from None
        return value


class SimulatedCamera(Section):
    name: str = Field(..., pattern=r"^[a-z0-9_-]+$", description="Mount name: cameras use sim://NAME")
    media: Literal["people", "flames", "empty", "pattern"] = Field(..., description="Built-in test clip")
    loop: bool = Field(True, description="Replay the clip forever")


class SimulatorSettings(Section):
    cameras: list[SimulatedCamera] = Field(default_factory=list, description="RTSP mounts to serve")
    media_dir: Path = Field(Path(".cache/media"), description="Where `gridwatch media prepare` builds clips")


class Settings(Section):
    data_dir: Path = Field(
        Path("data"), description="Working directory for embedded servers and the database"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Logging level")
    log_format: Literal["auto", "text", "json"] = Field(
        "auto",
        description="Log lines on stderr: json (one JSON object a line, for log shippers), text (plain "
        "lines), auto (colours on a terminal, plain lines otherwise); env GRIDWATCH_LOG_FORMAT",
    )
    redis: RedisSettings = RedisSettings()
    s3: S3Settings = S3Settings()
    database: DatabaseSettings = DatabaseSettings()
    api: ApiSettings = ApiSettings()
    worker: WorkerSettings = WorkerSettings()
    models: ModelSettings = ModelSettings()
    ingest: IngestSettings = IngestSettings()
    clips: ClipSettings = ClipSettings()
    spool: SpoolSettings = SpoolSettings()
    retention: RetentionSettings = RetentionSettings()
    simulator: SimulatorSettings | None = Field(None, description="Serve simulated cameras from this process")
    secret_key: SecretStr | None = Field(
        None,
        description="Key that seals camera URLs (their passwords) in the database, from "
        "`gridwatch secret-key`; empty: one made on first use in data_dir/secret.key. Many machines: give "
        "all the same key (GRIDWATCH_SECRET_KEY)",
    )
    villages: list[VillageSettings] = Field(default_factory=list)
    grids: list[GridSettings] = Field(default_factory=list)
    cameras: list[CameraSettings] = Field(default_factory=list)
    rules: list[RuleSettings] = Field(default_factory=list)
    timezone: str = Field("UTC", description="Local time zone of schedules, rosters and messages (IANA name)")
    holidays: list[date] = Field(default_factory=list, description="Dates that count as day 'holiday'")
    schedules: list[ScheduleSettings] = Field(default_factory=list, description="Named weekly time windows")
    teams: list[TeamSettings] = Field(default_factory=list, description="Patrol teams and their rosters")
    users: list[UserSettings] = Field(default_factory=list, description="People, by id (team members)")
    routing: RoutingSettings = RoutingSettings()
    incidents: IncidentSettings = IncidentSettings()
    notifiers: list[NotifierSettings] = Field(
        default_factory=list, description="Where notifications go: webhook, wecom, dingtalk, mqtt, webpush"
    )

    @field_validator("timezone")
    @classmethod
    def _timezone_known(cls, value: str) -> str:
        return check_timezone(value)

    @model_validator(mode="after")
    def _references(self) -> Settings:
        problems: list[str] = []
        self._check_alerting(problems)
        _unique(problems, "villages", [v.id for v in self.villages])
        _unique(problems, "grids", [g.id for g in self.grids])
        _unique(problems, "cameras", [c.id for c in self.cameras])
        villages = {v.id for v in self.villages}
        grids = {g.id: g for g in self.grids}
        for g in self.grids:
            if g.village not in villages:
                problems.append(f"grid {g.id!r} names unknown village {g.village!r}")
        mounts = {m.name for m in self.simulator.cameras} if self.simulator else set()
        for c in self.cameras:
            if c.village not in villages:
                problems.append(f"camera {c.id!r} names unknown village {c.village!r}")
            grid = grids.get(c.grid)
            if grid is None:
                problems.append(f"camera {c.id!r} names unknown grid {c.grid!r}")
            elif grid.village != c.village:
                problems.append(f"camera {c.id!r}: grid {c.grid!r} belongs to village {grid.village!r}")
            for secret in (c.url, c.record_url):
                url = secret.get_secret_value() if secret is not None else ""
                if url.startswith(SIM_SCHEME) and url[len(SIM_SCHEME) :] not in mounts:
                    problems.append(f"camera {c.id!r} uses {url!r} but the simulator has no such camera")
        for c in self.cameras:
            _unique(problems, f"zones of camera {c.id!r}", [z.name for z in c.zones])
            for mask in [*c.masks, *c.motion_masks]:
                if len(mask) < 3 or any(not (0 <= x <= 1 and 0 <= y <= 1) for x, y in mask):
                    problems.append(f"camera {c.id!r}: a mask needs at least 3 points inside 0..1")
        problems += self.rule_problems(self.rules)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def rule_problems(self, rules: list[RuleSettings]) -> list[str]:
        """What is wrong with `rules` in this config: names of cameras, zones, villages, grids, schedules
        that do not exist, thresholds for labels the rule does not have (also used for rule edits)."""
        problems: list[str] = []
        cameras = {c.id for c in self.cameras}
        zone_names = {z.name for c in self.cameras for z in c.zones}
        schedules = {x.name for x in self.schedules}
        villages, grids = {v.id for v in self.villages}, {g.id for g in self.grids}
        for r in rules:
            for what, names, known in (
                ("camera", r.cameras, cameras),
                ("village", r.villages, villages),
                ("grid", r.grids, grids),
                ("schedule", r.schedules, schedules),
            ):
                for name in names or []:
                    if name not in known:
                        problems.append(f"rule {r.name!r} names unknown {what} {name!r}")
            for zone in r.zones or []:
                if zone not in zone_names:
                    problems.append(f"rule {r.name!r} names zone {zone!r}, which no camera has")
            for label, value in [*r.label_min_score.items(), *r.label_min_area.items()]:
                if label not in r.labels:
                    problems.append(
                        f"rule {r.name!r} sets a threshold for {label!r}, which is not in its labels"
                    )
                if not 0 <= value <= 1:
                    problems.append(f"rule {r.name!r}: the threshold for {label!r} must be from 0 to 1")
            if r.window and r.window < r.min_hits:
                problems.append(
                    f"rule {r.name!r}: window ({r.window}) must be at least min_hits ({r.min_hits})"
                )
        return problems

    def _check_alerting(self, problems: list[str]) -> None:
        _unique(problems, "teams", [t.id for t in self.teams])
        _unique(problems, "users", [u.id for u in self.users])
        _unique(problems, "schedules", [x.name for x in self.schedules])
        _unique(problems, "rules", [r.name for r in self.rules])
        teams = {t.id: t for t in self.teams}
        schedules = {x.name for x in self.schedules}
        for u in self.users:
            if u.team is not None and u.team not in teams:
                problems.append(f"user {u.id!r} names unknown team {u.team!r}")
        for t in self.teams:
            if t.fallback is not None and t.fallback not in teams:
                problems.append(f"team {t.id!r} names unknown fallback team {t.fallback!r}")
            if t.fallback == t.id:
                problems.append(f"team {t.id!r} cannot be its own fallback")
            for shift in t.roster:
                if shift.user not in t.members:
                    problems.append(f"team {t.id!r}: roster user {shift.user!r} is not in its members")
                if shift.schedule not in schedules:
                    problems.append(f"team {t.id!r}: roster names unknown schedule {shift.schedule!r}")
        for g in self.grids:
            if g.team is not None and g.team not in teams:
                problems.append(f"grid {g.id!r} names unknown team {g.team!r}")
        for what, team_id in (
            ("fallback_team", self.routing.fallback_team),
            ("monitoring_centre", self.routing.monitoring_centre),
        ):
            if team_id is not None and team_id not in teams:
                problems.append(f"routing.{what} names unknown team {team_id!r}")
        _unique(problems, "notifiers", [n.name for n in self.notifiers])
        for n in self.notifiers:
            for team_id in n.teams or []:
                if team_id not in teams:
                    problems.append(f"notifier {n.name!r} names unknown team {team_id!r}")
        seen: dict[str, str] = {}
        for group, labels in self.incidents.groups.items():
            for label in labels:
                if label in seen:
                    problems.append(f"incidents.groups: {label!r} is in both {seen[label]!r} and {group!r}")
                seen[label] = group
        for group, window in self.incidents.group_windows.items():
            if window < 0:
                problems.append(f"incidents.group_windows: {group!r} must be >= 0 s")

    def spool_dir(self) -> Path:
        return self.spool.dir if self.spool.dir is not None else self.data_dir / "spool"

    def database_url(self) -> str:
        if self.database.url is not None:
            return self.database.url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'gridwatch.db').resolve()}"


def _unique(problems: list[str], what: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            problems.append(f"duplicate id {i!r} in {what}")
        seen.add(i)


# -- loading ----------------------------------------------------------------------------------------------


def load_settings(path: Path | None, environ: dict[str, str] | None = None) -> Settings:
    """Read and validate a YAML config; environment variables GRIDWATCH_A__B override key a.b."""
    env = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    node: yaml.Node | None = None
    source = str(path) if path else "(defaults)"
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        data = loaded
    overridden = _apply_env(data, env)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc, node, overridden)) from None


def _apply_env(data: dict[str, Any], env: dict[str, str]) -> set[tuple[str, ...]]:
    overridden: set[tuple[str, ...]] = set()
    for key, value in sorted(env.items()):
        if not key.startswith(ENV_PREFIX) or key in TOOL_VARIABLES:
            continue
        path = tuple(part.lower() for part in key[len(ENV_PREFIX) :].split("__") if part)
        if not path:
            continue
        target = data
        for part in path[:-1]:
            child = target.get(part)
            if not isinstance(child, dict):
                child = {}
                target[part] = child
            target = child
        target[path[-1]] = yaml.safe_load(value) if value.strip() else None
        overridden.add(path)
    return overridden


def _format_errors(
    source: str, exc: ValidationError, node: yaml.Node | None, overridden: set[tuple[str, ...]]
) -> str:
    lines = [f"{source}: {exc.error_count()} configuration error(s):"]
    for error in exc.errors():
        loc = tuple(error["loc"])
        key = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")
        where = ""
        str_loc = tuple(str(p) for p in loc if not isinstance(p, int))
        if any(str_loc[: len(o)] == o or o[: len(str_loc)] == str_loc for o in overridden):
            where = " (from environment)"
        else:
            line = _line_of(node, loc)
            if line is not None:
                where = f" (line {line})"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {key or '(top level)'}{where}: {message}")
    return "\n".join(lines)


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = None
            for key_node, value_node in node.value:
                if key_node.value == part:
                    found = (key_node, value_node)
                    break
            if found is None:
                return line
            line = found[0].start_mark.line + 1
            node = found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
