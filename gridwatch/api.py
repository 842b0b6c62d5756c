"""The HTTP API (FastAPI app factory). Every route but health, login and setup needs a login; what a caller
sees is narrowed to their grids (`api_scope`)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import PlainTextResponse, RedirectResponse
from pydantic import AwareDatetime, BaseModel

from gridwatch.api_cameras import MAX_IMPORT_BYTES
from gridwatch.api_cameras import router as cameras_router
from gridwatch.api_errors import document_errors
from gridwatch.api_health import router as health_router
from gridwatch.api_incidents import router as incidents_router
from gridwatch.api_limits import DEFAULT_MAX_BODY_BYTES, install_limits, store_origin
from gridwatch.api_org import router as org_router
from gridwatch.api_scope import STAFF, Scope, ViewScope
from gridwatch.api_state import AppState, State
from gridwatch.auth.login import install_auth
from gridwatch.web import install_ui
from storage.metadata import AlertRecord, IncidentStatus, Severity


class AlertOut(BaseModel):
    id: str
    camera_id: str
    village: str
    grid: str
    label: str
    score: float
    bbox: list[float]
    created_at: datetime
    snapshot_url: str | None
    thumbnail_url: str | None
    clip_url: str | None
    clip_status: str
    clip_duration_s: float | None
    severity: str | None = None
    rule: str | None = None
    incident_id: str | None = None  # set once the dispatcher has put it into an incident


class AlertPage(BaseModel):
    items: list[AlertOut]
    next_cursor: str | None


def _encode_cursor(alert: AlertRecord) -> str:
    raw = f"{alert.created_at.isoformat()}|{alert.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, alert_id = raw.split("|", 1)
        at = datetime.fromisoformat(when)
        if at.utcoffset() is None:  # only this API makes cursors, always aware: a naive one is not ours
            raise ValueError("naive")
        return at.astimezone(UTC), alert_id
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise HTTPException(status_code=400, detail="invalid cursor") from None


def _utc(value: datetime | None, name: str) -> datetime | None:
    """An aware query datetime in UTC; 422 for one that is not a UTC datetime (9999-12-31T23:00-14:00)."""
    try:
        return value.astimezone(UTC) if value is not None else None
    except OverflowError:
        raise HTTPException(status_code=422, detail=f"{name} is out of range") from None


def _alert_out(alert: AlertRecord) -> AlertOut:
    base = f"/api/v1/alerts/{alert.id}"
    return AlertOut(
        id=alert.id,
        camera_id=alert.camera_id,
        village=alert.village,
        grid=alert.grid,
        label=alert.label,
        score=alert.score,
        bbox=list(alert.bbox),
        created_at=alert.created_at,
        snapshot_url=f"{base}/snapshot" if alert.snapshot_key else None,
        thumbnail_url=f"{base}/thumbnail" if alert.thumbnail_key else None,
        clip_url=f"{base}/clip" if alert.clip_key else None,
        clip_status=alert.clip_status,
        clip_duration_s=alert.clip_duration_s,
        severity=alert.severity,
        rule=alert.rule,
        incident_id=alert.incident_id,
    )


def create_app(state: AppState, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """The app over `state`; request bodies over `max_body_bytes` are refused (413)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.gridwatch = state
        yield

    app = FastAPI(title="GridWatch", version="0.1.0", lifespan=lifespan)
    app.state.gridwatch = state
    install_limits(
        app, store_origin(state.store), max_body_bytes, larger={"/api/v1/cameras/import": MAX_IMPORT_BYTES}
    )
    app.include_router(health_router)
    app.include_router(incidents_router)
    app.include_router(cameras_router)
    app.include_router(org_router)
    install_auth(app, state)  # app.state.auth, the /api/v1 login, session, token and setup routes
    document_errors(app)

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=[STAFF])
    def metrics(s: State) -> PlainTextResponse:
        """Prometheus text; scrape with an admin's or operator's API token (`bearer_token` in Prometheus)."""
        if s.metrics is None:
            raise HTTPException(status_code=404, detail="no metrics in this process")
        return PlainTextResponse(s.metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/api/v1/alerts", response_model=AlertPage)
    def list_alerts(
        s: State,
        scope: ViewScope,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        status: Annotated[list[IncidentStatus] | None, Query(description="Incident status")] = None,
        severity: Annotated[list[Severity] | None, Query()] = None,
        label: Annotated[list[str] | None, Query(max_length=20)] = None,
        camera: Annotated[list[str] | None, Query(max_length=100)] = None,
        village: Annotated[list[str] | None, Query(max_length=100)] = None,
        grid: Annotated[list[str] | None, Query(max_length=100)] = None,
        since: Annotated[AwareDatetime | None, Query(description="Created at or after (ISO 8601)")] = None,
        until: Annotated[AwareDatetime | None, Query(description="Created before (ISO 8601)")] = None,
    ) -> AlertPage:
        """Newest first; every filter may be repeated (`?label=fire&label=smoke`); `next_cursor` pages on."""
        before = _decode_cursor(cursor) if cursor else None
        alerts = s.db.list_alerts(
            limit=limit + 1,
            before=before,
            grids=scope.within(grid),
            villages=village,
            cameras=camera,
            labels=label,
            severities=severity,
            statuses=status,
            since=_utc(since, "since"),
            until=_utc(until, "until"),
        )
        page = alerts[:limit]
        next_cursor = _encode_cursor(page[-1]) if len(alerts) > limit else None
        return AlertPage(items=[_alert_out(a) for a in page], next_cursor=next_cursor)

    def _get(s: AppState, alert_id: str, scope: Scope) -> AlertRecord:
        alert = s.db.get_alert(alert_id) if len(alert_id) <= 64 else None
        if alert is None or not scope.sees(alert.grid):  # another grid's alert: as if there were none
            raise HTTPException(status_code=404, detail="alert not found")
        return alert

    @app.get("/api/v1/alerts/{alert_id}", response_model=AlertOut)
    def get_alert(alert_id: str, s: State, scope: ViewScope) -> AlertOut:
        return _alert_out(_get(s, alert_id, scope))

    @app.get("/api/v1/alerts/{alert_id}/snapshot", status_code=307)
    def get_snapshot(alert_id: str, s: State, scope: ViewScope) -> RedirectResponse:
        alert = _get(s, alert_id, scope)
        if not alert.snapshot_key:
            raise HTTPException(status_code=404, detail="this alert has no snapshot")
        return RedirectResponse(s.store.presigned_get(alert.snapshot_key, s.presign), status_code=307)

    @app.get("/api/v1/alerts/{alert_id}/thumbnail", status_code=307)
    def get_thumbnail(alert_id: str, s: State, scope: ViewScope) -> RedirectResponse:
        alert = _get(s, alert_id, scope)
        if not alert.thumbnail_key:
            raise HTTPException(status_code=404, detail="this alert has no thumbnail")
        return RedirectResponse(s.store.presigned_get(alert.thumbnail_key, s.presign), status_code=307)

    @app.get("/api/v1/alerts/{alert_id}/clip", status_code=307)
    def get_clip(alert_id: str, s: State, scope: ViewScope) -> RedirectResponse:
        alert = _get(s, alert_id, scope)
        if not alert.clip_key:
            detail = "the clip is still being recorded" if alert.clip_status == "pending" else "no clip"
            raise HTTPException(status_code=404, detail=detail)
        return RedirectResponse(s.store.presigned_get(alert.clip_key, s.presign), status_code=307)

    install_ui(app)
    return app
