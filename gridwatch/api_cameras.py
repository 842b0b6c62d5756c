"""HTTP routes of the cameras: the list and detail every role sees (a patrol member: their grids only), and
the admin's registration: create (with a probe), edit, delete, probe again, import a CSV file.

Cameras of the config file are shown with `source: "config"` and cannot be changed here (409). A camera's
URL is never shown with its password; the database keeps it sealed (`gridwatch.sealing`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from gridwatch.api_scope import STAFF, Admin, ViewScope
from gridwatch.api_state import AppState, State
from gridwatch.camera_registry import (
    CameraExists,
    CameraFields,
    ConfigCamera,
    GrabsBusy,
    RegistryError,
    camera_detection,
)
from gridwatch.sealing import SealError
from gridwatch.settings import CameraDetection
from storage.metadata import CameraRecord

router = APIRouter(prefix="/api/v1", tags=["cameras"])

MAX_IMPORT_BYTES = 32 * 1024 * 1024  # 10,000 rows are about 1.5 MB; api_limits lets this route have more


class ProbeOut(BaseModel):
    ok: bool
    error: str | None = None
    error_kind: str | None = None
    video_codec: str | None = None
    width: int | None = None
    height: int | None = None
    fps_measured: float | None = None
    fps_declared: float | None = None
    bitrate_kbps: float | None = None
    gop_seconds: float | None = None
    audio_codec: str | None = None
    warnings: list[str] = []
    probed_at: datetime | None = None
    observed: bool = Field(
        False, description="true: what a worker saw on the stream it pulls, not a probe of the camera's own"
    )


class CameraOut(BaseModel):
    id: str
    name: str
    village: str
    grid: str
    url: str  # redacted
    record_url: str | None = None  # redacted
    detect_fps: float
    enabled: bool
    source: str = "config"
    state: str | None = None
    health: dict[str, Any] | None = None
    probe: ProbeOut | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    detection: CameraDetection | None = None


class CameraPatch(BaseModel):
    """The fields to change; what is left out stays."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=256)
    village: str | None = Field(None, max_length=128)
    grid: str | None = Field(None, min_length=1, max_length=128)
    url: str | None = Field(None, min_length=1, max_length=2048)
    record_url: str | None = Field(None, max_length=2048, description='"" removes it')
    detect_fps: float | None = Field(None, gt=0, le=30)
    enabled: bool | None = None
    detection: CameraDetection | None = Field(
        None,
        description="Zones, masks, motion masks, per-label thresholds (replaced whole); null removes them",
    )


class RowError(BaseModel):
    field: str
    message: str
    line: int | None = None


class ImportOut(BaseModel):
    rows: int
    created: int
    updated: int
    unchanged: int
    dry_run: bool


def camera_out(camera: CameraRecord, health: dict[str, Any] | None) -> CameraOut:
    probe = ProbeOut(**camera.probe, probed_at=camera.probed_at) if camera.probe else None
    return CameraOut(
        id=camera.id,
        name=camera.name,
        village=camera.village,
        grid=camera.grid,
        url=camera.url_redacted,
        record_url=camera.record_url_redacted,
        detect_fps=camera.detect_fps,
        enabled=camera.enabled,
        source=camera.source,
        state=health["detect"]["state"] if health else None,
        health=health,
        probe=probe,
        created_at=camera.created_at,
        updated_at=camera.updated_at,
        detection=camera_detection(camera) if camera.detection else None,
    )


def _refused(exc: RegistryError) -> HTTPException:
    if isinstance(exc, CameraExists | ConfigCamera):
        return HTTPException(status_code=409, detail=exc.errors[0].message)
    errors = [RowError(field=e.field, message=e.message, line=e.line).model_dump() for e in exc.errors]
    return HTTPException(status_code=422, detail=errors)


def _now() -> datetime:
    return datetime.now(UTC)


def _out(s: AppState, camera: CameraRecord) -> CameraOut:
    return camera_out(camera, s.camera_health(camera.id))


@router.get("/cameras", response_model=list[CameraOut])
def list_cameras(s: State, scope: ViewScope) -> list[CameraOut]:
    return [_out(s, c) for c in s.db.list_cameras() if scope.sees(c.grid)]


@router.get("/cameras/{camera_id}", response_model=CameraOut)
def get_camera(camera_id: str, s: State, scope: ViewScope) -> CameraOut:
    camera = s.db.get_camera(camera_id) if len(camera_id) <= 128 else None
    if camera is None or not scope.sees(camera.grid):
        raise HTTPException(status_code=404, detail="camera not found")
    return _out(s, camera)


@router.post("/cameras", response_model=CameraOut, status_code=201)
def create_camera(
    body: CameraFields,
    s: State,
    who: Admin,
    probe: Annotated[bool, Query(description="Probe the camera now (a few seconds)")] = True,
) -> CameraOut:
    """Register a camera. With `probe` (the default) the answer carries what the camera sends (resolution,
    frame rate) or why it could not be opened; a camera that fails its probe is still registered."""
    try:
        camera = s.registry.register(body, probe=probe, at=_now())
    except RegistryError as exc:
        raise _refused(exc) from None
    s.db.add_audit(who.user_id, "camera.create", f"camera:{camera.id}", {"grid": camera.grid})
    return _out(s, camera)


@router.patch("/cameras/{camera_id}", response_model=CameraOut)
def update_camera(camera_id: str, body: CameraPatch, s: State, who: Admin) -> CameraOut:
    changes = body.model_dump(exclude_unset=True)
    if changes.get("record_url") == "":
        changes["record_url"] = None
    if any(v is None for k, v in changes.items() if k not in ("record_url", "village", "detection")):
        raise HTTPException(status_code=422, detail="only record_url, village and detection may be null")
    try:
        camera = s.registry.update(camera_id, changes, at=_now())
    except KeyError:
        raise HTTPException(status_code=404, detail="camera not found") from None
    except RegistryError as exc:
        raise _refused(exc) from None
    except SealError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    s.db.add_audit(who.user_id, "camera.update", f"camera:{camera_id}", {"fields": sorted(changes)})
    return _out(s, camera)


@router.delete("/cameras/{camera_id}", status_code=204)
def delete_camera(camera_id: str, s: State, who: Admin) -> Response:
    try:
        s.registry.delete(camera_id)
    except KeyError:
        raise HTTPException(status_code=404, detail="camera not found") from None
    except RegistryError as exc:
        raise _refused(exc) from None
    s.db.add_audit(who.user_id, "camera.delete", f"camera:{camera_id}", {})
    return Response(status_code=204)


@router.post("/cameras/{camera_id}/probe", response_model=ProbeOut)
def probe_camera(camera_id: str, s: State, who: Admin) -> ProbeOut:
    """Open the camera now and report what it sends (recorded with the camera)."""
    try:
        camera = s.registry.probe(camera_id, at=_now())
    except KeyError:
        raise HTTPException(status_code=404, detail="camera not found") from None
    except SealError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    assert camera.probe is not None
    return ProbeOut(**camera.probe, probed_at=camera.probed_at)


@router.get(
    "/cameras/{camera_id}/frame",
    dependencies=[STAFF],
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "A JPEG of what the camera shows now"},
        404: {"description": "No such camera"},
        429: {"description": "Too many pictures being grabbed at once"},
        502: {"description": "The camera gave no picture: `detail` says why, `error_kind` what kind"},
    },
)
def camera_frame(camera_id: str, s: State) -> Response:
    """A picture of the camera's scene now (admins and operators): for drawing its zones and masks, and for
    a look at a camera from the camera wall. The worker that runs the camera gives the next frame it
    decodes (within 3 s); a camera no worker runs gets a short RTSP session of the API's own. Nothing is
    stored. The camera's width and height come in `X-Frame-Width` and `X-Frame-Height` (the JPEG itself is
    at most 1280 wide), and `X-Frame-Source` says `worker` or `camera`."""
    try:
        grabbed = s.registry.frame(camera_id) if len(camera_id) <= 128 else None
    except KeyError:
        grabbed = None
    except SealError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    except GrabsBusy as exc:
        raise HTTPException(status_code=429, detail=str(exc), headers={"Retry-After": "2"}) from None
    if grabbed is None:
        raise HTTPException(status_code=404, detail="camera not found")
    if not grabbed.ok or grabbed.jpeg is None:
        body = {"detail": grabbed.error or "no picture", "error_kind": grabbed.error_kind or "error"}
        return JSONResponse(status_code=502, content=body)
    headers = {
        "Cache-Control": "no-store",
        "X-Frame-Width": str(grabbed.width),
        "X-Frame-Height": str(grabbed.height),
        "X-Frame-Source": grabbed.source,
    }
    return Response(content=grabbed.jpeg, media_type="image/jpeg", headers=headers)


@router.post(
    "/cameras/import",
    response_model=ImportOut,
    responses={422: {"description": "Rows refused; nothing was imported"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
)
async def import_cameras(
    request: Request,
    s: State,
    who: Admin,
    dry_run: Annotated[bool, Query(description="Check every row, write nothing")] = False,
) -> ImportOut | JSONResponse:
    """Create or update cameras from a CSV file (UTF-8; header `id,name,village,grid,url,record_url,
    detect_fps,enabled`; id, name, grid and url needed). All rows or none: any bad row gives 422 with
    every error by line and column, and nothing is imported. Cameras are not probed: the worker that pulls
    one records its codec, resolution and frame rate as its probe after a few seconds (`observed`); probe
    one now with POST /cameras/{id}/probe."""
    body = await request.body()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(status_code=422, detail=f"the file is not UTF-8 (byte {exc.start})") from None
    try:
        report = await run_in_threadpool(s.registry.import_csv, text, at=_now(), dry_run=dry_run)
    except RegistryError as exc:
        errors = [RowError(field=e.field, message=e.message, line=e.line).model_dump() for e in exc.errors]
        detail = f"{exc.total} error(s), nothing was imported" + (
            f" (the first {len(errors)} are listed)" if exc.total > len(errors) else ""
        )
        return JSONResponse({"detail": detail, "total": exc.total, "errors": errors}, status_code=422)
    if not dry_run:
        details = {"created": report.created, "updated": report.updated, "rows": report.rows}
        s.db.add_audit(who.user_id, "camera.import", "cameras", details)
    return ImportOut(
        rows=report.rows,
        created=report.created,
        updated=report.updated,
        unchanged=report.unchanged,
        dry_run=report.dry_run,
    )
