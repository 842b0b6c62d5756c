"""Incidents, push subscriptions and rule overrides: the dispatcher's and the API's part of `MetadataDB`.

Writes that two processes may race on are conditional updates (compare and set): a status step applies only
from the status the caller saw, an escalation only once, so two operators pressing "acknowledge" at once, or
two dispatchers escalating, leave one step recorded.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from storage.metadata.checks import at_or_now, check_choice, require_aware
from storage.metadata.records import (
    INCIDENT_STATUSES,
    SEVERITIES,
    AlertActionRecord,
    new_id,
)
from storage.metadata.rows import to_record
from storage.metadata.tables import (
    AlertActionRow,
    AlertRow,
    IncidentRow,
    PushSubscriptionRow,
    RuleOverrideRow,
)

OPEN = ("new", "acknowledged", "dispatched", "on_scene")
STEP_COLUMNS = {  # status -> the incident's column holding when it was reached
    "acknowledged": "acknowledged_at",
    "dispatched": "dispatched_at",
    "on_scene": "on_scene_at",
    "resolved": "closed_at",
    "false_alarm": "closed_at",
}


@dataclass(frozen=True, slots=True)
class IncidentRecord:
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
    cameras: tuple[str, ...]
    first_alert_id: str
    escalation_level: int = 0
    escalated_at: datetime | None = None
    acknowledged_at: datetime | None = None
    dispatched_at: datetime | None = None
    on_scene_at: datetime | None = None
    closed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class IncidentAttach:
    incident: IncidentRecord
    created: bool  # the alert opened this incident (now, or when it was first handled)


@dataclass(frozen=True, slots=True)
class PushSubscriptionRecord:
    id: str
    user_id: str
    endpoint: str
    subscription_json: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RuleOverrideRecord:
    name: str
    body: dict[str, Any]
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True, slots=True)
class ResponseTimes:
    """One grid's response figures over the incidents opened in the period asked for."""

    grid: str
    incidents: int
    acknowledged: int
    on_scene: int
    median_ack_s: float | None
    p90_ack_s: float | None
    median_on_scene_s: float | None
    p90_on_scene_s: float | None
    escalated: int


def _incident(row: IncidentRow) -> IncidentRecord:
    values = {name: getattr(row, name) for name in IncidentRecord.__dataclass_fields__}
    values["cameras"] = tuple(row.cameras or ())
    return IncidentRecord(**values)


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class IncidentStore:
    """Mixed into `MetadataDB` (which provides the session factory)."""

    _sessions: sessionmaker[Session]

    # -- incidents --------------------------------------------------------------------------------

    def attach_alert_to_incident(
        self,
        *,
        alert_id: str,
        camera_id: str,
        village: str,
        grid: str,
        group: str,
        label: str,
        severity: str,
        at: datetime,
        window_s: float,
        team: str | None,
    ) -> IncidentAttach:
        """Join the grid's open incident of `group` whose last alert is at most `window_s` before `at`, or
        open one. Idempotent: an alert already attached gets its incident back. The caller serialises calls
        for one (grid, group) (a Redis lock across dispatchers)."""
        check_choice(severity, SEVERITIES, "severity")
        require_aware(at, "at")
        with self._sessions.begin() as session:
            alert = session.get(AlertRow, alert_id)
            if alert is not None and alert.incident_id is not None:
                row = session.get(IncidentRow, alert.incident_id)
                assert row is not None
                return IncidentAttach(_incident(row), row.first_alert_id == alert_id)
            since = datetime.fromtimestamp(at.timestamp() - window_s, at.tzinfo)
            row = session.scalars(
                select(IncidentRow)
                .where(
                    IncidentRow.grid == grid,
                    IncidentRow.category == group,
                    IncidentRow.status.in_(OPEN),
                    IncidentRow.last_alert_at >= since,
                )
                .order_by(IncidentRow.last_alert_at.desc())
                .limit(1)
            ).first()
            created = row is None
            if row is None:
                row = IncidentRow(
                    id=new_id(),
                    category=group,
                    label=label,
                    severity=severity,
                    status="new",
                    village=village,
                    grid=grid,
                    team=team,
                    opened_at=at,
                    last_alert_at=at,
                    alert_count=1,
                    cameras=[camera_id],
                    first_alert_id=alert_id,
                    escalation_level=0,
                )
                session.add(row)
            else:
                row.alert_count += 1
                row.last_alert_at = max(row.last_alert_at, at)
                if camera_id not in row.cameras:
                    row.cameras = [*row.cameras, camera_id]
                if _rank(severity) > _rank(row.severity):
                    row.severity = severity
            session.flush()
            if alert is not None:
                alert.incident_id = row.id
            return IncidentAttach(_incident(row), created)

    def get_incident(self, incident_id: str) -> IncidentRecord | None:
        with self._sessions() as session:
            row = session.get(IncidentRow, incident_id)
            return _incident(row) if row is not None else None

    def list_incidents(
        self,
        *,
        status: str | None = None,
        grids: list[str] | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[IncidentRecord]:
        query = select(IncidentRow).order_by(IncidentRow.opened_at.desc(), IncidentRow.id).limit(limit)
        if status is not None:
            check_choice(status, INCIDENT_STATUSES, "status")
            query = query.where(IncidentRow.status == status)
        if grids is not None:
            query = query.where(IncidentRow.grid.in_(grids))
        if since is not None:
            query = query.where(IncidentRow.opened_at >= since)
        with self._sessions() as session:
            return [_incident(r) for r in session.scalars(query)]

    def list_incident_alert_ids(self, incident_id: str) -> list[str]:
        with self._sessions() as session:
            query = (
                select(AlertRow.id)
                .where(AlertRow.incident_id == incident_id)
                .order_by(AlertRow.created_at, AlertRow.id)
            )
            return list(session.scalars(query))

    def incidents_to_escalate(self, *, opened_before: datetime) -> list[IncidentRecord]:
        """Incidents still new (nobody acknowledged) opened before `opened_before`, not escalated yet."""
        query = (
            select(IncidentRow)
            .where(
                IncidentRow.status == "new",
                IncidentRow.escalation_level == 0,
                IncidentRow.opened_at <= opened_before,
            )
            .order_by(IncidentRow.opened_at)
            .limit(100)
        )
        with self._sessions() as session:
            return [_incident(r) for r in session.scalars(query)]

    def mark_incident_escalated(self, incident_id: str, *, level: int, at: datetime) -> bool:
        """Record an escalation once: False when the incident was acknowledged or escalated meanwhile."""
        with self._sessions.begin() as session:
            done = session.execute(
                update(IncidentRow)
                .where(
                    IncidentRow.id == incident_id,
                    IncidentRow.status == "new",
                    IncidentRow.escalation_level < level,
                )
                .values(escalation_level=level, escalated_at=at)
            ).rowcount  # type: ignore[attr-defined]
            if done:
                first = session.scalar(
                    select(IncidentRow.first_alert_id).where(IncidentRow.id == incident_id)
                )
                if first is not None and session.get(AlertRow, first) is not None:
                    session.add(
                        AlertActionRow(
                            alert_id=first,
                            incident_id=incident_id,
                            user_id=None,
                            action="escalated",
                            note=f"level {level}: nobody acknowledged in time",
                            at=at,
                        )
                    )
            return bool(done)

    def set_incident_status(
        self,
        incident_id: str,
        *,
        expected: str,
        status: str,
        user_id: str | None,
        note: str | None = None,
        at: datetime | None = None,
    ) -> AlertActionRecord | None:
        """One lifecycle step, compare-and-set from `expected`; None when the status was no longer
        `expected` (someone else stepped first). The step is recorded as an action on the incident's first
        alert, with who and when. Which steps are legal is `alerts.lifecycle`'s to say."""
        check_choice(status, INCIDENT_STATUSES, "status")
        when = at_or_now(at)
        column = STEP_COLUMNS.get(status)
        values: dict[str, Any] = {"status": status}
        if column is not None:
            values[column] = when
        with self._sessions.begin() as session:
            done = session.execute(
                update(IncidentRow)
                .where(IncidentRow.id == incident_id, IncidentRow.status == expected)
                .values(**values)
            ).rowcount  # type: ignore[attr-defined]
            if not done:
                return None
            first = session.scalar(select(IncidentRow.first_alert_id).where(IncidentRow.id == incident_id))
            row = AlertActionRow(
                alert_id=first,
                incident_id=incident_id,
                user_id=user_id,
                action=status,
                note=note,
                at=when,
            )
            session.add(row)
            session.flush()
            return to_record(AlertActionRecord, row)

    def list_incident_actions(self, incident_id: str) -> list[AlertActionRecord]:
        query = (
            select(AlertActionRow)
            .where(AlertActionRow.incident_id == incident_id)
            .order_by(AlertActionRow.at, AlertActionRow.id)
        )
        with self._sessions() as session:
            return [to_record(AlertActionRecord, r) for r in session.scalars(query)]

    def response_times(self, *, since: datetime) -> list[ResponseTimes]:
        """Per grid, over incidents opened since `since`: time to acknowledge and to reach the scene."""
        query = select(IncidentRow).where(IncidentRow.opened_at >= since)
        by_grid: dict[str, list[IncidentRow]] = {}
        with self._sessions() as session:
            for row in session.scalars(query):
                by_grid.setdefault(row.grid, []).append(row)
        out = []
        for grid, rows in sorted(by_grid.items()):
            ack = [(r.acknowledged_at - r.opened_at).total_seconds() for r in rows if r.acknowledged_at]
            scene = [(r.on_scene_at - r.opened_at).total_seconds() for r in rows if r.on_scene_at]
            out.append(
                ResponseTimes(
                    grid=grid,
                    incidents=len(rows),
                    acknowledged=len(ack),
                    on_scene=len(scene),
                    median_ack_s=statistics.median(ack) if ack else None,
                    p90_ack_s=_percentile(ack, 0.9),
                    median_on_scene_s=statistics.median(scene) if scene else None,
                    p90_on_scene_s=_percentile(scene, 0.9),
                    escalated=sum(r.escalation_level > 0 for r in rows),
                )
            )
        return out

    # -- push subscriptions -----------------------------------------------------------------------

    def add_push_subscription(
        self, user_id: str, subscription_json: str, *, at: datetime | None = None
    ) -> PushSubscriptionRecord:
        """A browser's subscription for `user_id`; the same endpoint again replaces the old one (a phone
        that re-subscribed, or changed hands)."""
        endpoint = _endpoint(subscription_json)
        with self._sessions.begin() as session:
            old = session.scalars(
                select(PushSubscriptionRow).where(PushSubscriptionRow.endpoint == endpoint)
            ).first()
            if old is not None:
                session.delete(old)
                session.flush()
            row = PushSubscriptionRow(
                id=new_id(),
                user_id=user_id,
                endpoint=endpoint,
                subscription=subscription_json,
                created_at=at_or_now(at),
            )
            session.add(row)
            session.flush()
            return _subscription(row)

    def list_push_subscriptions(self, *, user_ids: list[str]) -> list[PushSubscriptionRecord]:
        if not user_ids:
            return []
        query = (
            select(PushSubscriptionRow)
            .where(PushSubscriptionRow.user_id.in_(user_ids))
            .order_by(PushSubscriptionRow.created_at, PushSubscriptionRow.id)
        )
        with self._sessions() as session:
            return [_subscription(r) for r in session.scalars(query)]

    def delete_push_subscription(self, subscription_json_or_endpoint: str) -> bool:
        """Forget a subscription (the push service said it is gone), by its JSON or its endpoint."""
        text = subscription_json_or_endpoint
        endpoint = _endpoint(text) if text.lstrip().startswith("{") else text
        with self._sessions.begin() as session:
            row = session.scalars(
                select(PushSubscriptionRow).where(PushSubscriptionRow.endpoint == endpoint)
            ).first()
            if row is None:
                return False
            session.delete(row)
            return True

    # -- rules edited through the API -----------------------------------------------------------

    def list_rule_overrides(self) -> list[RuleOverrideRecord]:
        with self._sessions() as session:
            rows = session.scalars(select(RuleOverrideRow).order_by(RuleOverrideRow.name))
            return [to_record(RuleOverrideRecord, r) for r in rows]

    def put_rule_override(
        self, name: str, body: dict[str, Any], *, user: str, at: datetime | None = None
    ) -> RuleOverrideRecord:
        with self._sessions.begin() as session:
            row = session.get(RuleOverrideRow, name)
            if row is None:
                row = RuleOverrideRow(name=name, body=body, updated_at=at_or_now(at), updated_by=user)
                session.add(row)
            else:
                row.body, row.updated_at, row.updated_by = body, at_or_now(at), user
            session.flush()
            return to_record(RuleOverrideRecord, row)

    def delete_rule_override(self, name: str) -> bool:
        with self._sessions.begin() as session:
            row = session.get(RuleOverrideRow, name)
            if row is None:
                return False
            session.delete(row)
            return True


def _endpoint(subscription_json: str) -> str:
    try:
        data = json.loads(subscription_json)
        endpoint = data["endpoint"]
    except (ValueError, KeyError, TypeError):
        raise ValueError("a push subscription is JSON with an endpoint") from None
    loopback = ("http://127.0.0.1:", "http://localhost:")  # test push services only
    if not isinstance(endpoint, str) or not endpoint.startswith(("https://", *loopback)):
        raise ValueError("a push subscription's endpoint must be an https:// URL")
    return endpoint


def _subscription(row: PushSubscriptionRow) -> PushSubscriptionRecord:
    return PushSubscriptionRecord(row.id, row.user_id, row.endpoint, row.subscription, row.created_at)
