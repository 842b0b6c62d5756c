"""Registering cameras: one at a time (the admin API) or thousands from a CSV file, with the ingest URL rules,
a probe of what the camera sends, and the URLs sealed for the database.

A camera comes from the config ("config": written at every start, read-only through the API) or from an
admin ("api"). Its grid must exist; its village is the grid's (given, it must match). Its URL must pass
`ingest.urls.validate_camera_url` (rtsp:// or rtsps://, no link-local, multicast or metadata hosts), or be
`sim://MOUNT` of this deployment's simulator. A CSV import is checked whole before anything is written:
every bad row is reported by line and column, and with one bad row nothing is imported.
"""

from __future__ import annotations

import csv
import io
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gridwatch.sealing import SealError, SecretBox, load_box
from gridwatch.settings import SIM_SCHEME, CameraDetection, CameraSettings, Settings
from ingest.frame_grab import FrameGrab, grab_frame
from ingest.health import StreamHealth
from ingest.probe import ProbeResult, probe_camera
from ingest.urls import CameraURLError, redact_url, validate_camera_url
from storage.metadata import KEPT_BY_CAMERAS, CameraRecord, GridRecord, MetadataDB, RowExists

if TYPE_CHECKING:
    from gridwatch.live_frames import LiveFrames

log = logging.getLogger(__name__)

CAMERA_ID = r"^[a-z0-9][a-z0-9_-]{0,62}$"
CSV_COLUMNS = ("id", "name", "village", "grid", "url", "record_url", "detect_fps", "enabled")
CSV_REQUIRED = ("id", "name", "grid", "url")
MAX_IMPORT_ROWS = 50_000
MAX_REPORTED_ERRORS = 1000
PROBE_FIELDS = (
    "ok", "error", "error_kind", "video_codec", "width", "height", "fps_measured", "fps_declared",
    "bitrate_kbps", "gop_seconds", "audio_codec", "warnings",
)  # fmt: skip

Prober = Callable[[str], ProbeResult]
Grabber = Callable[[str], FrameGrab]
MAX_CONCURRENT_GRABS = 4  # each holds an RTSP session and an API thread for a few seconds


class CameraFields(BaseModel):
    """What an admin gives for a camera (the API's body, one CSV row)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: str = Field(..., pattern=CAMERA_ID, description="Stable camera id (lower case, digits, - and _)")
    name: str = Field(..., min_length=1, max_length=256)
    village: str | None = Field(None, max_length=128, description="Empty: the grid's village")
    grid: str = Field(..., min_length=1, max_length=128)
    url: str = Field(..., min_length=1, max_length=2048, description="rtsp:// or rtsps:// (decoded)")
    record_url: str | None = Field(None, max_length=2048, description="Main stream kept for clips")
    detect_fps: float = Field(2.0, gt=0, le=30)
    enabled: bool = True
    detection: CameraDetection | None = Field(
        None, description="Zones, masks, motion masks and per-label thresholds, as in the config file"
    )

    @field_validator("village", "record_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if value == "" else value


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str
    line: int | None = None  # the CSV line (the header is line 1)


class RegistryError(ValueError):
    """A camera the registry refuses; `errors` name the fields."""

    def __init__(self, errors: list[FieldError], *, total: int | None = None) -> None:
        self.errors = errors
        self.total = len(errors) if total is None else total
        first = errors[0] if errors else FieldError("", "invalid")
        where = f"line {first.line}: " if first.line is not None else ""
        more = f" (and {self.total - 1} more)" if self.total > 1 else ""
        super().__init__(f"{where}{first.field}: {first.message}{more}")


class ConfigCamera(RegistryError):
    """The camera is the config's: change it in the YAML file."""


class CameraExists(RegistryError):
    """The id is taken."""


@dataclass(frozen=True, slots=True)
class ImportReport:
    rows: int
    created: int
    updated: int
    unchanged: int
    dry_run: bool
    created_ids: tuple[str, ...] = field(default=(), repr=False)


def probe_summary(result: ProbeResult) -> dict[str, Any]:
    """What the database keeps of a probe (JSON); never the URL (the camera has it)."""
    data = result.to_dict()
    return {key: data[key] for key in PROBE_FIELDS}


def observed_probe(health: StreamHealth) -> dict[str, Any]:
    """A probe's record made from a stream a worker pulls (codec, size, measured rate and bitrate): what a
    camera imported in bulk, or from the config, or unreachable when it was registered, gets once it
    streams, without a probe of its own. `observed` tells it from a probe's."""
    return {key: None for key in PROBE_FIELDS} | {
        "ok": True,
        "video_codec": health.codec,
        "width": health.width,
        "height": health.height,
        "fps_measured": health.input_fps,
        "bitrate_kbps": health.bitrate_kbps,
        "warnings": [],
        "observed": True,
    }


def wants_observed_probe(probe: Mapping[str, Any] | None, health: StreamHealth) -> bool:
    """Whether a worker should record what it sees of the camera: no probe yet, a failed one (the camera
    streams now), or one whose codec or size the stream no longer has (the camera was reconfigured)."""
    if health.width is None or health.height is None:
        return False
    if probe is None or not probe.get("ok"):
        return True
    return (probe.get("video_codec"), probe.get("width"), probe.get("height")) != (
        health.codec,
        health.width,
        health.height,
    )


def seal_config_camera(c: CameraSettings, box: SecretBox, at: datetime) -> CameraRecord:
    url = c.url.get_secret_value()
    record = c.record_url.get_secret_value() if c.record_url is not None else None
    return CameraRecord(
        id=c.id,
        name=c.name,
        village=c.village,
        grid=c.grid,
        url_redacted=redact_url(url),
        detect_fps=c.detect_fps,
        enabled=c.enabled,
        updated_at=at,
        url_sealed=box.seal(url),
        record_url_redacted=redact_url(record) if record else None,
        record_url_sealed=box.seal(record) if record else None,
        source="config",
        detection=detection_json(c),
    )


def detection_json(detection: CameraDetection | None) -> dict[str, Any] | None:
    """What the database keeps of a camera's detection settings (None: none at all)."""
    if detection is None:
        return None
    kept = CameraDetection.model_validate(detection.model_dump(include=set(CameraDetection.model_fields)))
    return None if kept.is_empty() else kept.model_dump(mode="json")


def camera_detection(camera: CameraRecord) -> CameraDetection:
    """The camera's detection settings from the database (empty when it has none); a ValueError names the
    camera if what is stored is not valid."""
    try:
        return CameraDetection.model_validate(camera.detection or {})
    except ValidationError as exc:
        raise ValueError(
            f"camera {camera.id}: detection settings in the database are not valid: {exc}"
        ) from None


def sync_config_cameras(settings: Settings, db: MetadataDB, box: SecretBox, at: datetime) -> list[str]:
    """Write the config's cameras that are new or changed (URLs sealed) and delete the config's cameras it
    no longer names; the ids written. A camera the database already has as the config says keeps its
    `updated_at`, so a process that starts (one worker of many) does not make every worker restart it."""
    known = {c.id: c for c in db.list_cameras()}
    changed = []
    for c in settings.cameras:
        old = known.get(c.id)
        if old is None or old.source != "config" or not _config_camera_unchanged(old, c, box):
            changed.append(seal_config_camera(c, box, at))
    db.write_cameras(changed)
    gone = db.delete_config_cameras_except(c.id for c in settings.cameras)
    if gone:
        log.info("cameras no longer in the config, removed: %s", ", ".join(gone))
    return [c.id for c in changed]


def _config_camera_unchanged(old: CameraRecord, c: CameraSettings, box: SecretBox) -> bool:
    try:
        url, record = camera_urls(old, box)
    except SealError:
        return False
    wanted_record = c.record_url.get_secret_value() if c.record_url is not None else None
    return (old.name, old.village, old.grid, old.detect_fps, old.enabled, url, record, old.detection) == (
        c.name, c.village, c.grid, c.detect_fps, c.enabled, c.url.get_secret_value(), wanted_record,
        detection_json(c),
    )  # fmt: skip


def settings_box(settings: Settings) -> SecretBox:
    """The deployment's box: the configured secret key, else the key file in the data directory."""
    key = settings.secret_key.get_secret_value() if settings.secret_key else None
    return load_box(key, settings.data_dir)


def camera_urls(camera: CameraRecord, box: SecretBox) -> tuple[str, str | None]:
    """The camera's detect and record URLs, opened (for the worker that pulls it)."""
    if camera.url_sealed is None:
        raise SealError(f"camera {camera.id!r} has no sealed URL in the database")
    url = box.open(camera.url_sealed, f"URL of camera {camera.id!r}")
    record = camera.record_url_sealed
    return url, box.open(record, f"record URL of camera {camera.id!r}") if record else None


class GrabsBusy(RuntimeError):
    """As many pictures are being grabbed as the registry allows at once."""


class CameraRegistry:
    def __init__(
        self,
        db: MetadataDB,
        box: SecretBox,
        *,
        prober: Prober | None = None,
        grabber: Grabber | None = None,
        resolve_url: Callable[[str], str] | None = None,
        sim_mounts: Iterable[str] = (),
        live: LiveFrames | None = None,
    ) -> None:
        self.db = db
        self.box = box
        self.prober = prober or _default_prober
        self.grabber = grabber or _default_grabber
        self.live = live  # the picture of the process that runs the camera, before a session of our own
        self._grabs = threading.BoundedSemaphore(MAX_CONCURRENT_GRABS)
        self.resolve_url = resolve_url or (lambda url: url)  # sim://MOUNT -> the simulator's rtsp:// URL
        self.sim_mounts = frozenset(sim_mounts)

    # -- one camera -------------------------------------------------------------------------------

    def register(self, fields: CameraFields, *, probe: bool = True, at: datetime) -> CameraRecord:
        """Check, probe (a failed probe is recorded, not refused: the camera may be offline today), store."""
        grids = {g.id: g for g in self.db.list_grids()}
        village = self._check(fields, grids)
        camera = self._record(fields, village, at)
        try:
            self.db.create_camera(camera)
        except RowExists:
            raise CameraExists([FieldError("id", f"camera {fields.id!r} exists")]) from None
        log.info("camera %s registered (grid %s)", fields.id, fields.grid)
        return self.probe(fields.id, at=at) if probe else camera

    def update(self, camera_id: str, changes: Mapping[str, Any], *, at: datetime) -> CameraRecord:
        """Apply a partial edit (the fields of `CameraFields` but id); a new URL is probed again."""
        camera = self._api_camera(camera_id)
        url, record_url = camera_urls(camera, self.box)
        current = CameraFields(
            id=camera.id,
            name=camera.name,
            village=camera.village,
            grid=camera.grid,
            url=url,
            record_url=record_url,
            detect_fps=camera.detect_fps,
            enabled=camera.enabled,
            detection=camera.detection,
        )
        if "grid" in changes and "village" not in changes:
            changes = {**changes, "village": None}  # moved to another grid: its village follows
        try:
            wanted = CameraFields.model_validate({**current.model_dump(), **changes, "id": camera_id})
        except ValidationError as exc:
            raise RegistryError(_pydantic_errors(exc)) from None
        village = self._check(wanted, {g.id: g for g in self.db.list_grids()})
        new = self._record(wanted, village, at)
        updated = self.db.update_camera(
            camera_id,
            name=new.name,
            village=new.village,
            grid=new.grid,
            url_redacted=new.url_redacted,
            url_sealed=new.url_sealed,
            record_url_redacted=new.record_url_redacted,
            record_url_sealed=new.record_url_sealed,
            detect_fps=new.detect_fps,
            enabled=new.enabled,
            detection=new.detection,
            updated_at=at,
        )
        log.info("camera %s changed: %s", camera_id, ", ".join(sorted(changes)) or "nothing")
        if wanted.url != url:
            return self.probe(camera_id, at=at)
        return updated

    def delete(self, camera_id: str) -> None:
        self._api_camera(camera_id)
        self.db.delete_camera(camera_id)
        log.info("camera %s deleted (its alerts and clips stay)", camera_id)

    def probe(self, camera_id: str, *, at: datetime) -> CameraRecord:
        """Probe the camera now and record the result (any camera, the config's too)."""
        camera = self.db.get_camera(camera_id)
        if camera is None:
            raise KeyError(camera_id)
        url, _ = camera_urls(camera, self.box)
        result = self.prober(self.resolve_url(url))
        self.db.set_camera_probe(camera_id, probe_summary(result), at)
        return replace(camera, probe=probe_summary(result), probed_at=at)

    def frame(self, camera_id: str) -> FrameGrab:
        """A picture from the camera now (to draw its zones on), or why there is none; `GrabsBusy` when
        `MAX_CONCURRENT_GRABS` are already running. The worker that runs the camera gives its next decoded
        frame (`live`: no second RTSP session, which many cameras refuse); a camera no worker runs, or
        whose worker does not answer within a few seconds, gets a short session of our own."""
        camera = self.db.get_camera(camera_id)
        if camera is None:
            raise KeyError(camera_id)
        url, _ = camera_urls(camera, self.box)
        if not self._grabs.acquire(blocking=False):
            raise GrabsBusy(f"{MAX_CONCURRENT_GRABS} pictures are being grabbed; try again in a moment")
        try:
            grabbed = self.live.grab(camera_id) if self.live is not None else None
            return grabbed if grabbed is not None else self.grabber(self.resolve_url(url))
        finally:
            self._grabs.release()

    # -- many cameras -----------------------------------------------------------------------------

    def import_csv(self, text: str, *, at: datetime, dry_run: bool = False) -> ImportReport:
        """Create or update the API cameras of a CSV file (header: `CSV_COLUMNS`, `CSV_REQUIRED` needed),
        all in one transaction, or nothing with a `RegistryError` listing every bad row."""
        if "\x00" in text:
            line = text.count("\n", 0, text.index("\x00")) + 1
            raise RegistryError([FieldError("", "the file holds a NUL character", line)])
        reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))
        try:
            return self._import_rows(reader, at=at, dry_run=dry_run)
        except csv.Error as exc:
            raise RegistryError([FieldError("", f"not CSV: {exc}", reader.line_num)]) from None

    def _import_rows(self, reader: csv.DictReader[str], *, at: datetime, dry_run: bool) -> ImportReport:
        header = [h.strip() for h in reader.fieldnames or ()]
        problems = [FieldError(h or "(empty)", "unknown column", 1) for h in header if h not in CSV_COLUMNS]
        problems += [FieldError(c, "missing column", 1) for c in CSV_REQUIRED if c not in header]
        if problems:
            raise RegistryError(problems)
        grids = {g.id: g for g in self.db.list_grids()}
        existing = {c.id: c for c in self.db.list_cameras()}
        errors: list[FieldError] = []
        wanted: list[tuple[CameraFields, str]] = []
        seen: dict[str, int] = {}
        for index, raw in enumerate(reader):
            line = reader.line_num
            if index >= MAX_IMPORT_ROWS:
                raise RegistryError([FieldError("", f"more than {MAX_IMPORT_ROWS} rows", line)])
            if None in raw:
                errors.append(FieldError("", "more cells than the header has columns", line))
                continue
            cells = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            row = {k: v for k, v in cells.items() if v != "" or k in CSV_REQUIRED}
            try:
                fields = CameraFields.model_validate(row)
            except ValidationError as exc:
                errors += [replace(e, line=line) for e in _pydantic_errors(exc)]
                continue
            if fields.id in seen:
                twice = f"camera {fields.id!r} is also on line {seen[fields.id]}"
                errors.append(FieldError("id", twice, line))
                continue
            seen[fields.id] = line
            if (old := existing.get(fields.id)) is not None and old.source == "config":
                errors.append(FieldError("id", f"camera {fields.id!r} is defined in the config file", line))
                continue
            try:
                wanted.append((fields, self._check(fields, grids)))
            except RegistryError as exc:
                errors += [replace(e, line=line) for e in exc.errors]
        if errors:
            raise RegistryError(errors[:MAX_REPORTED_ERRORS], total=len(errors))
        created: list[CameraRecord] = []
        changed: list[CameraRecord] = []
        for fields, village in wanted:
            old = existing.get(fields.id)
            if old is not None and self._same(old, fields, village):
                continue
            record = self._record(fields, village, at)
            (changed if old is not None else created).append(record)
        if not dry_run:  # a row has no detection settings: an updated camera keeps its own
            self.db.write_cameras([*created, *changed], keep=(*KEPT_BY_CAMERAS, "detection"))
            log.info("CSV import: %d camera(s) created, %d changed", len(created), len(changed))
        return ImportReport(
            rows=len(wanted),
            created=len(created),
            updated=len(changed),
            unchanged=len(wanted) - len(created) - len(changed),
            dry_run=dry_run,
            created_ids=tuple(c.id for c in created),
        )

    # -- the checks -------------------------------------------------------------------------------

    def _api_camera(self, camera_id: str) -> CameraRecord:
        camera = self.db.get_camera(camera_id)
        if camera is None:
            raise KeyError(camera_id)
        if camera.source == "config":
            raise ConfigCamera(
                [FieldError("id", f"camera {camera_id!r} is defined in the config file: change it there")]
            )
        return camera

    def _check(self, fields: CameraFields, grids: Mapping[str, GridRecord]) -> str:
        """The camera's village; RegistryError for an unknown grid, another grid's village, a refused URL."""
        errors: list[FieldError] = []
        grid = grids.get(fields.grid)
        village = fields.village or (grid.village_id if grid else "")
        if grid is None:
            errors.append(FieldError("grid", f"unknown grid {fields.grid!r}"))
        elif fields.village and fields.village != grid.village_id:
            elsewhere = f"grid {grid.id!r} is in village {grid.village_id!r}, not {fields.village!r}"
            errors.append(FieldError("village", elsewhere))
        for name in ("url", "record_url"):
            value = getattr(fields, name)
            if value is not None and (problem := self._url_problem(value)):
                errors.append(FieldError(name, problem))
        if errors:
            raise RegistryError(errors)
        return village

    def _url_problem(self, url: str) -> str | None:
        if url.startswith(SIM_SCHEME):
            mount = url[len(SIM_SCHEME) :]
            return None if mount in self.sim_mounts else f"no simulated camera {mount!r} in this deployment"
        try:
            validate_camera_url(url)
        except CameraURLError as exc:
            return str(exc)
        return None

    def _record(self, fields: CameraFields, village: str, at: datetime) -> CameraRecord:
        record = fields.record_url
        return CameraRecord(
            id=fields.id,
            name=fields.name,
            village=village,
            grid=fields.grid,
            url_redacted=redact_url(fields.url),
            detect_fps=fields.detect_fps,
            enabled=fields.enabled,
            updated_at=at,
            url_sealed=self.box.seal(fields.url),
            record_url_redacted=redact_url(record) if record else None,
            record_url_sealed=self.box.seal(record) if record else None,
            source="api",
            created_at=at,
            detection=detection_json(fields.detection),
        )

    def _same(self, old: CameraRecord, fields: CameraFields, village: str) -> bool:
        try:
            url, record = camera_urls(old, self.box)
        except SealError:
            return False
        before = (old.name, old.village, old.grid, url, record, old.detect_fps, old.enabled)
        f = fields
        return before == (f.name, village, f.grid, f.url, f.record_url, f.detect_fps, f.enabled)


def _pydantic_errors(exc: ValidationError) -> list[FieldError]:
    out = []
    for e in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in e["loc"]) or "(row)"
        out.append(FieldError(where, "unknown column" if e["type"] == "extra_forbidden" else e["msg"]))
    return out


def _default_prober(url: str) -> ProbeResult:
    return probe_camera(url, open_timeout_s=5, read_timeout_s=5, sample_seconds=2.0)


def _default_grabber(url: str) -> FrameGrab:
    return grab_frame(url, open_timeout_s=5, read_timeout_s=5)
