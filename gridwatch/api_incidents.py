"""HTTP routes of the alert side: incidents and their lifecycle, response times, rules, push subscriptions.

Every route needs a logged-in caller; a patrol member sees only the grids of their team (`api_scope`), rules
are read by staff and changed by admins, and actions and rule edits are recorded as by the caller.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, ValidationError

from alerts.bus import BusMessage
from alerts.lifecycle import ACTIONS, TransitionError, next_status
from alerts.notifiers.settings import WebPushSettings
from gridwatch.alerting import merged_rules
from gridwatch.api_scope import STAFF, Admin, Scope, ViewScope
from gridwatch.api_state import AppState, State
from gridwatch.auth.deps import CurrentPrincipal
from gridwatch.auth.principal import Principal
from gridwatch.feed import valid_event_id
from gridwatch.settings import RuleSettings, Settings
from storage.metadata import IncidentRecord, ResponseTimes

router = APIRouter(prefix="/api/v1")

log = logging.getLogger(__name__)
MAX_NOTE = 2000


class IncidentOut(BaseModel):
    id: str
    category: str
    label: str
    severity: str
    status: str
    village: str
    grid: str
    team: str | None
    opened_at: datetime
    last_alert_at: datetime
    alert_count: int
    cameras: list[str]
    first_alert_id: str
    escalation_level: int
    escalated_at: datetime | None
    acknowledged_at: datetime | None
    dispatched_at: datetime | None
    on_scene_at: datetime | None
    closed_at: datetime | None


class ActionOut(BaseModel):
    action: str
    user_id: str | None
    note: str | None
    at: datetime


class IncidentDetail(IncidentOut):
    alert_ids: list[str]
    actions: list[ActionOut]


class ActionIn(BaseModel):
    model_config = {"extra": "forbid"}

    action: str = Field(..., description=f"One of {', '.join(ACTIONS)}")
    note: str | None = Field(None, max_length=MAX_NOTE)


class RuleOut(BaseModel):
    source: str  # "yaml" or "api"
    rule: dict[str, Any]


class SubscriptionIn(BaseModel):
    model_config = {"extra": "forbid"}

    subscription: dict[str, Any] = Field(..., description="The browser's PushSubscription as JSON")


def _incident_out(i: IncidentRecord) -> IncidentOut:
    return IncidentOut(**{**{k: getattr(i, k) for k in IncidentOut.model_fields}, "cameras": list(i.cameras)})


def _incident(s: AppState, incident_id: str, scope: Scope) -> IncidentRecord:
    incident = s.db.get_incident(incident_id) if len(incident_id) <= 64 else None
    if incident is None or not scope.sees(incident.grid):
        raise HTTPException(status_code=404, detail="incident not found")
    return incident


@router.get("/incidents", response_model=list[IncidentOut])
def list_incidents(
    s: State,
    scope: ViewScope,
    status: Annotated[str | None, Query(max_length=16)] = None,
    grid: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[IncidentOut]:
    try:
        grids = scope.within([grid] if grid else None)
        found = s.db.list_incidents(status=status, grids=grids, limit=limit)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return [_incident_out(i) for i in found]


@router.get("/incidents/{incident_id}", response_model=IncidentDetail)
def get_incident(incident_id: str, s: State, scope: ViewScope) -> IncidentDetail:
    incident = _incident(s, incident_id, scope)
    actions = [
        ActionOut(action=a.action, user_id=a.user_id, note=a.note, at=a.at)
        for a in s.db.list_incident_actions(incident.id)
    ]
    return IncidentDetail(
        **_incident_out(incident).model_dump(),
        alert_ids=s.db.list_incident_alert_ids(incident.id),
        actions=actions,
    )


def _act(s: AppState, incident: IncidentRecord, body: ActionIn, who: Principal) -> IncidentOut:
    try:
        target = next_status(incident.status, body.action)
    except TransitionError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    done = s.db.set_incident_status(
        incident.id, expected=incident.status, status=target, user_id=who.user_id, note=body.note
    )
    if done is None:
        raise HTTPException(status_code=409, detail="the incident changed meanwhile; reload it and try again")
    after = s.db.get_incident(incident.id)
    assert after is not None
    if s.publish is not None:
        _publish_status(s, after)
    return _incident_out(after)


def _publish_status(s: AppState, after: IncidentRecord) -> None:
    assert s.publish is not None
    first = s.db.get_alert(after.first_alert_id)
    try:
        s.publish(
            BusMessage(
                alert_id=after.first_alert_id,
                kind="incident",
                camera_id=first.camera_id if first else (after.cameras[0] if after.cameras else "-"),
                village=after.village,
                grid=after.grid,
                label=after.label,
                score=first.score if first else 0.0,
                created_at=datetime.now(UTC).isoformat(),
                severity=after.severity,
                status=after.status,
                incident_id=after.id,
            )
        )
    except Exception:  # the step is recorded; only the "resolved" notification is missed
        log.exception("incident %s: status %s not published to the bus", after.id, after.status)


@router.post("/incidents/{incident_id}/actions", response_model=IncidentOut)
def act_on_incident(incident_id: str, body: ActionIn, s: State, scope: ViewScope) -> IncidentOut:
    return _act(s, _incident(s, incident_id, scope), body, scope.principal)


@router.post("/alerts/{alert_id}/actions", response_model=IncidentOut)
def act_on_alert(alert_id: str, body: ActionIn, s: State, scope: ViewScope) -> IncidentOut:
    """An action on an alert acts on its incident (every alert of the incident shares its status)."""
    alert = s.db.get_alert(alert_id) if len(alert_id) <= 64 else None
    if alert is None or not scope.sees(alert.grid):
        raise HTTPException(status_code=404, detail="alert not found")
    if alert.incident_id is None:
        raise HTTPException(status_code=409, detail="the alert has not reached the dispatcher yet; try again")
    return _act(s, _incident(s, alert.incident_id, scope), body, scope.principal)


@router.get("/stats/response-times", response_model=list[ResponseTimes])
def response_times(
    s: State, scope: ViewScope, days: Annotated[int, Query(ge=1, le=366)] = 7
) -> list[ResponseTimes]:
    """Per grid over the last `days`: incidents, acknowledged, on scene, median and p90 seconds."""
    found = s.db.response_times(since=datetime.now(UTC) - timedelta(days=days))
    return [t for t in found if scope.sees(t.grid)]


# -- rules ----------------------------------------------------------------------------------------------


def _settings(s: AppState) -> Settings:
    if s.settings is None:
        raise HTTPException(status_code=404, detail="rules are not editable in this process")
    return s.settings


@router.get("/rules", response_model=list[RuleOut], dependencies=[STAFF])
def list_rules(s: State) -> list[RuleOut]:
    settings = _settings(s)
    edited = {o.name for o in s.db.list_rule_overrides()}
    return [
        RuleOut(source="api" if r.name in edited else "yaml", rule=r.model_dump(mode="json"))
        for r in merged_rules(settings, s.db.list_rule_overrides())
    ]


@router.put("/rules/{name}", response_model=RuleOut)
def put_rule(name: str, body: dict[str, Any], s: State, who: Admin) -> RuleOut:
    """Create or replace a rule (the YAML rule of that name is overridden until the edit is deleted)."""
    settings = _settings(s)
    if len(name) > 128 or not name.strip():
        raise HTTPException(status_code=422, detail="a rule name is 1 to 128 characters")
    if "name" in body and body["name"] != name:
        raise HTTPException(status_code=422, detail="the body's name differs from the URL's")
    try:
        rule = RuleSettings.model_validate({**body, "name": name})
    except ValidationError as exc:
        errors = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise HTTPException(status_code=422, detail=errors) from None
    problems = settings.rule_problems([rule])
    if problems:
        raise HTTPException(status_code=422, detail=problems)
    stored = rule.model_dump(mode="json", exclude={"name"})
    s.db.put_rule_override(name, stored, user=who.user_id)
    s.db.add_audit(who.user_id, "rule.put", f"rule:{name}", {"rule": stored})
    return RuleOut(source="api", rule=rule.model_dump(mode="json"))


@router.delete("/rules/{name}", status_code=204)
def delete_rule(name: str, s: State, who: Admin) -> None:
    _settings(s)
    if len(name) > 128 or not s.db.delete_rule_override(name):
        raise HTTPException(status_code=404, detail="no rule of that name was edited through the API")
    s.db.add_audit(who.user_id, "rule.delete", f"rule:{name}", {})


# -- push subscriptions ---------------------------------------------------------------------------------


@router.post("/push/subscriptions", status_code=201)
def add_push_subscription(body: SubscriptionIn, s: State, who: CurrentPrincipal) -> dict[str, str]:
    """The caller's browser subscribes to Web Push (its pushes follow the caller's team and roster)."""
    try:
        record = s.db.add_push_subscription(who.user_id, json.dumps(body.subscription))
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return {"id": record.id}


@router.get("/push/key")
def push_key(s: State, _who: CurrentPrincipal) -> dict[str, str]:
    """The VAPID public key a browser subscribes with (`applicationServerKey`); 404 without Web Push."""
    settings = _settings(s)
    for n in settings.notifiers:
        if isinstance(n, WebPushSettings) and n.enabled:
            return {"application_server_key": n.vapid_keys().application_server_key}
    raise HTTPException(status_code=404, detail="no Web Push notifier is configured")


@router.get("/feed", response_class=StreamingResponse)
async def live_feed(request: Request, s: State, scope: ViewScope) -> StreamingResponse:
    """Server-Sent Events: `alert`, `clip`, `ended` and `incident` entries as they happen. A reconnecting
    browser's `Last-Event-ID` resumes where it stopped."""
    if s.feed is None:
        raise HTTPException(status_code=404, detail="no live feed in this process (it needs Redis)")
    last = valid_event_id(request.headers.get("last-event-id"))
    return StreamingResponse(
        s.feed.events(lambda m: scope.sees(m.grid), last),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
