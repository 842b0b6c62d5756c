"""From alerts on the bus to people: incidents, routing, one notification per incident, escalation.

The dispatcher reads the alert stream in a consumer group (at least once: an entry is acknowledged only
after everything it caused was delivered or given up), so handling an entry twice must change nothing: the
incident an alert joined is stored with the alert, and every delivery has a key (notification, notifier,
target) that is looked up before sending.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from alerts.bus import BusMessage
from alerts.incidents import IncidentPolicy
from alerts.notifiers.base import Notification, Notifier
from alerts.notifiers.retry import DeliveryResult, RetryPolicy, deliver
from alerts.routing import Router
from alerts.rules import default_severity
from storage.metadata import IncidentRecord, MetadataDB

log = logging.getLogger(__name__)

LockFactory = Callable[[str], AbstractContextManager[object]]


def _everything(_n: Notification) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class Channel:
    """A configured notifier and which notifications it is sent (its settings' `accepts`: team, severity,
    kind)."""

    notifier: Notifier
    accepts: Callable[[Notification], bool] = _everything

    @property
    def name(self) -> str:
        return self.notifier.name


@dataclass(frozen=True, slots=True)
class DispatchStats:
    notifications: int
    delivered: int
    failed: int
    gone: int  # push subscriptions the push service no longer knows (removed)
    skipped_duplicates: int


class DeliveryPending(Exception):
    """A delivery failed on retryable errors (the receiver is down): the bus entry is left pending, so it
    is taken over and tried again after the reclaim interval; what was delivered is not sent again."""


@contextmanager
def _no_lock(_key: str) -> Iterator[None]:
    yield


class Dispatcher:
    """Turns bus entries into incidents and deliveries; `handle` may be called again for the same entry."""

    def __init__(
        self,
        db: MetadataDB,
        router: Router,
        channels: Sequence[Channel],
        *,
        policy: IncidentPolicy | None = None,
        retry: RetryPolicy | None = None,
        escalate_after_s: float = 300.0,
        redeliver_for_s: float = 3600.0,
        public_url: str | None = None,
        timezone: str = "UTC",
        lock: LockFactory | None = None,
        clock: Callable[[], float] = time.time,
        max_parallel: int = 8,
        publish: Callable[[BusMessage], object] | None = None,
    ) -> None:
        # where the incident an alert joined is announced (the live feed shows it at once); None: nowhere
        self.publish = publish
        self.db = db
        self.router = router
        self.channels = tuple(channels)
        self.policy = policy or IncidentPolicy()
        self.retry = retry or RetryPolicy()
        self.escalate_after_s = escalate_after_s
        self.redeliver_for_s = redeliver_for_s
        self.public_url = public_url.rstrip("/") if public_url else None
        self.zone = ZoneInfo(timezone)
        self.lock = lock or _no_lock
        self.clock = clock
        self._pool = ThreadPoolExecutor(max_parallel, thread_name_prefix="notify")
        self._counts = {"notifications": 0, "delivered": 0, "failed": 0, "gone": 0, "skipped_duplicates": 0}
        self._counts_lock = threading.Lock()
        self._camera_names: dict[str, str] = {}
        self.deliveries_by_channel: Counter[tuple[str, str]] = Counter()  # (notifier, result) -> count

    # -- entries ----------------------------------------------------------------------------------------

    def handle(self, message: BusMessage) -> None:
        """One bus entry. Raises when it could not be handled (the entry stays pending and is retried)."""
        if message.kind == "alert":
            self._on_alert(message)
        elif message.kind == "incident":
            self._on_status(message)
        # "clip" and "ended" entries change nothing here: the clip and the event are on the alert's row.

    def _on_status(self, m: BusMessage) -> None:
        """An incident was resolved or marked a false alarm (the API published it): tell the channels that
        take "resolved" notifications (MQTT, webhooks: a Home Assistant or a county dashboard)."""
        if m.status not in ("resolved", "false_alarm") or m.incident_id is None:
            return
        incident = self.db.get_incident(m.incident_id)
        if incident is None:
            log.warning("status entry for unknown incident %s ignored", m.incident_id)
            return
        n = self._notification("resolved", incident, m, incident.severity, team=incident.team)
        self._notify(n, ())

    def _on_alert(self, m: BusMessage) -> None:
        severity = m.severity or default_severity([m.label])
        group = self.policy.group_of(m.label)
        at = _parse_time(m.created_at)
        route = self.router.route(m.grid, at.timestamp())
        with self.lock(f"incident:{m.grid}:{group}"):
            joined = self.db.attach_alert_to_incident(
                alert_id=m.alert_id,
                camera_id=m.camera_id,
                village=m.village,
                grid=m.grid,
                group=group,
                label=m.label,
                severity=severity,
                at=at,
                window_s=self.policy.window_for(group),
                team=route.team,
            )
        incident = joined.incident
        kind = "new" if incident.first_alert_id == m.alert_id else "update"
        if joined.created:
            log.info(
                "incident %s opened by alert %s (%s at camera %s, grid %s) for team %s (%s)",
                incident.id, m.alert_id, m.label, m.camera_id, m.grid, route.team, route.reason,
            )  # fmt: skip
        self._announce(m, incident, severity)
        notification = self._notification(kind, incident, m, severity, team=route.team)
        self._notify(notification, route.on_duty)

    def _announce(self, m: BusMessage, incident: IncidentRecord, severity: str) -> None:
        """Put the alert's incident on the bus (`kind: incident` for this alert), so that the live feed
        shows which incident it joined; the dispatcher itself ignores such an entry (its status is not
        resolved). A failure costs only that: the pages find the incident on their next look."""
        if self.publish is None:
            return
        try:
            self.publish(
                BusMessage(
                    alert_id=m.alert_id,
                    kind="incident",
                    camera_id=m.camera_id,
                    village=m.village,
                    grid=m.grid,
                    label=m.label,
                    score=m.score,
                    created_at=datetime.now(UTC).isoformat(),
                    severity=severity,
                    status=incident.status,
                    incident_id=incident.id,
                )
            )
        except Exception:
            log.exception("incident %s of alert %s not announced on the bus", incident.id, m.alert_id)

    # -- escalation -------------------------------------------------------------------------------------

    def escalate_due(self) -> int:
        """Escalate every incident nobody acknowledged within `escalate_after_s`; the number escalated."""
        now = datetime.fromtimestamp(self.clock(), UTC)
        due = self.db.incidents_to_escalate(opened_before=now - timedelta(seconds=self.escalate_after_s))
        done = 0
        for incident in due:
            with self.lock(f"escalate:{incident.id}"):
                current = self.db.get_incident(incident.id)
                if current is None or current.status != "new" or current.escalation_level > 0:
                    continue  # acknowledged meanwhile, or another dispatcher escalated it
                teams = self.router.escalation_teams(incident.team)
                log.warning(
                    "incident %s (%s, grid %s) not acknowledged within %.0f s: escalated to %s",
                    incident.id, incident.category, incident.grid, self.escalate_after_s,
                    ", ".join(teams) or "nobody",
                )  # fmt: skip
                for team in teams:
                    n = self._escalation(current, team)
                    self._notify(n, self.router.members_on_duty(team, now.timestamp()))
                # Marked after the deliveries: a dispatcher that dies in between escalates again, and the
                # delivery keys keep that from notifying anyone twice.
                if self.db.mark_incident_escalated(incident.id, level=1, at=now):
                    done += 1
        return done

    def _escalation(self, incident: IncidentRecord, team: str) -> Notification:
        alert = self.db.get_alert(incident.first_alert_id)
        message = BusMessage(
            alert_id=incident.first_alert_id,
            kind="alert",
            camera_id=alert.camera_id if alert else "",
            village=incident.village,
            grid=incident.grid,
            label=alert.label if alert else incident.category,
            score=alert.score if alert else 0.0,
            created_at=(alert.created_at if alert else incident.opened_at).isoformat(),
        )
        return self._notification("escalation", incident, message, incident.severity, team=team)

    # -- delivery ---------------------------------------------------------------------------------------

    def _notification(
        self, kind: str, incident: IncidentRecord, m: BusMessage, severity: str, team: str | None
    ) -> Notification:
        camera = self._camera_name(m.camera_id)
        local = _parse_time(m.created_at).astimezone(self.zone)
        what = m.label.upper() if severity == "critical" else m.label.capitalize()
        prefix = {
            "escalation": "NOT ACKNOWLEDGED: ",
            "update": "Update: ",
            "resolved": "Resolved: " if m.status == "resolved" else "False alarm: ",
        }.get(kind, "")
        title = f"{prefix}{what} at {camera}"
        body = (
            f"{m.label} ({m.score:.2f}) at {local:%H:%M:%S} in village {m.village}, grid {m.grid}; "
            f"incident {incident.id}, {incident.alert_count} alert(s) on {len(incident.cameras)} camera(s)"
        )
        if kind == "escalation":
            body += f"; nobody acknowledged it within {self.escalate_after_s / 60:.0f} min"
        base = self.public_url
        suffix = {"new": m.alert_id, "update": m.alert_id, "resolved": m.status}.get(kind, f"{team}")
        return Notification(
            dedupe_key=f"{incident.id}:{kind}:{suffix}",
            kind=kind,
            incident_id=incident.id,
            alert_id=m.alert_id,
            severity=severity,
            label=m.label,
            score=m.score,
            camera_id=m.camera_id,
            camera_name=camera,
            village=m.village,
            grid=m.grid,
            team=team,
            title=title,
            body=body,
            created_at=m.created_at,
            snapshot_url=f"{base}/api/v1/alerts/{m.alert_id}/snapshot" if base else None,
            url=f"{base}/#/alerts/{m.alert_id}" if base else None,
        )

    def _notify(self, n: Notification, users: Sequence[str]) -> None:
        jobs: list[tuple[Channel, str | None]] = []
        for channel in self.channels:
            if not channel.accepts(n):
                continue
            if channel.notifier.channel == "webpush":
                for sub in self.db.list_push_subscriptions(user_ids=list(users)):
                    jobs.append((channel, sub.subscription_json))
            else:
                jobs.append((channel, None))
        with self._counts_lock:
            self._counts["notifications"] += 1
        futures = [self._pool.submit(self._deliver_once, n, channel, target) for channel, target in jobs]
        errors = [f.exception() for f in futures]
        failed = [e for e in errors if e is not None and not isinstance(e, DeliveryPending)]
        pending = [e for e in errors if isinstance(e, DeliveryPending)]
        if pending and not failed:
            raise pending[0]
        if failed:
            raise RuntimeError(f"notification {n.dedupe_key}: {len(failed)} delivery record(s) failed") from (
                failed[0]
            )

    def _deliver_once(self, n: Notification, channel: Channel, target: str | None) -> None:
        key = delivery_key(n.dedupe_key, channel.name, target)
        if self.db.delivery_done(key):
            self._count("skipped_duplicates")
            return
        result: DeliveryResult = deliver(channel.notifier, n, target, self.retry)
        age = self.clock() - _parse_time(n.created_at).timestamp()
        try_later = result.retryable and age < self.redeliver_for_s
        status = {"delivered": "sent", "gone": "gone"}.get(
            result.status, "retrying" if try_later else "failed"
        )
        self.db.record_delivery(
            alert_id=n.alert_id,
            channel=channel.notifier.channel,
            target=channel.name if target is None else f"{channel.name}:{_digest(target)}",
            status=status,  # type: ignore[arg-type]
            attempts=result.attempts,
            error=result.last_error,
            key=key,
            incident_id=n.incident_id,
            kind=n.kind,
        )
        with self._counts_lock:
            self.deliveries_by_channel[(channel.name, result.status)] += 1
        if result.status == "delivered":
            self._count("delivered")
        elif result.status == "gone":  # routine: a phone unsubscribed or its subscription expired
            self._count("gone")
            log.info("%s: a push subscription is gone (%s); it is removed", channel.name, result.last_error)
        elif try_later:
            self._count("failed")
            log.warning(
                "%s notification for incident %s not delivered by %s after %d attempt(s): %s; "
                "trying again later",
                n.kind, n.incident_id, channel.name, result.attempts, result.last_error,
            )  # fmt: skip
        else:
            self._count("failed")
            log.error(
                "%s notification for incident %s not delivered by %s after %d attempt(s): %s",
                n.kind, n.incident_id, channel.name, result.attempts, result.last_error,
            )  # fmt: skip
        if result.status == "gone" and target is not None:
            self.db.delete_push_subscription(target)
        if try_later:
            raise DeliveryPending(f"{channel.name}: {result.last_error}")

    def _count(self, what: str) -> None:
        with self._counts_lock:
            self._counts[what] += 1

    @property
    def stats(self) -> DispatchStats:
        with self._counts_lock:
            return DispatchStats(**self._counts)

    def _camera_name(self, camera_id: str) -> str:
        name = self._camera_names.get(camera_id)
        if name is None:
            cameras = {c.id: c.name for c in self.db.list_cameras()}
            self._camera_names.update(cameras)
            name = cameras.get(camera_id, camera_id)
        return name

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for channel in self.channels:
            channel.notifier.close()


def delivery_key(notification_key: str, channel: str, target: str | None) -> str:
    return f"{notification_key}:{channel}" + (f":{_digest(target)}" if target is not None else "")


def _digest(target: str) -> str:
    return hashlib.sha256(target.encode()).hexdigest()[:16]


def _parse_time(text: str) -> datetime:
    at = datetime.fromisoformat(text)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
