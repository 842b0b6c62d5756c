"""`MetadataDB`: every read and write of the metadata database, each call in its own session."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select, update
from sqlalchemy.orm import sessionmaker

from storage import migrations
from storage.metadata.auth import AuthStore
from storage.metadata.checks import (
    at_or_now,
    check_choice,
    check_limit,
    facts_values,
    require_aware,
    require_no_credentials,
    require_no_secret_keys,
    require_password_hash,
    require_redacted,
    short_error,
)
from storage.metadata.engine import make_engine
from storage.metadata.fences import Fence, FenceStore, claim_in
from storage.metadata.incidents import IncidentStore
from storage.metadata.records import (
    ALERT_ACTIONS,
    CLIP_FILE_STATUSES,
    CLIP_STATUSES,
    DELIVERY_STATUSES,
    IMAGE_KINDS,
    ROLES,
    AlertActionKind,
    AlertActionRecord,
    AlertRecord,
    AuditRecord,
    CameraRecord,
    ClipFacts,
    ClipFileStatus,
    ClipRecord,
    DeletedAlert,
    DeliveryRecord,
    DeliveryStatus,
    EventRecord,
    GridRecord,
    ImageKind,
    TeamRecord,
    UserRecord,
    VillageRecord,
    new_id,
    utcnow,
    values_of,
)
from storage.metadata.registry import RegistryStore, team_values
from storage.metadata.rows import (
    alert_record,
    delete_alert_rows,
    delivery_upsert,
    in_flight,
    to_record,
    upsert_statement,
)
from storage.metadata.tables import (
    AlertActionRow,
    AlertRow,
    AuditRow,
    Base,
    CameraRow,
    ClipRow,
    DeliveryRow,
    EventRow,
    GridRow,
    IncidentRow,
    TeamRow,
    UserRow,
    VillageRow,
)

R = TypeVar("R")


class MetadataDB(IncidentStore, AuthStore, RegistryStore, FenceStore):
    """The metadata database. Safe to share between threads: each call uses its own session."""

    def __init__(self, url: str) -> None:
        self._engine = make_engine(url)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"MetadataDB({self._engine.url.render_as_string(hide_password=True)!r})"

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def migrate(self) -> None:
        """Upgrade the schema to the newest migration (idempotent; safe from many processes at once).

        A database made before migrations existed is adopted with its rows."""
        migrations.upgrade_to_head(self._engine)

    def create_schema(self) -> None:
        """The name callers used before migrations: the same as `migrate()`."""
        self.migrate()

    def schema_revision(self) -> str | None:
        return migrations.current_revision(self._engine)

    def close(self) -> None:
        self._engine.dispose()

    # -- cameras --------------------------------------------------------------------------------
    def upsert_cameras(self, rows: list[CameraRecord]) -> None:
        """Insert new cameras and overwrite existing ones (by id), in one transaction."""
        for row in rows:
            require_aware(row.updated_at, "updated_at")
            require_redacted(row.url_redacted)
        self._upsert(CameraRow, [values_of(r) for r in rows])

    def list_cameras(self) -> list[CameraRecord]:
        return self._list(CameraRecord, select(CameraRow).order_by(CameraRow.id))

    # -- villages, teams, grids, users ----------------------------------------------------------
    def upsert_villages(self, rows: list[VillageRecord]) -> None:
        self._upsert(VillageRow, [values_of(r) for r in rows])

    def list_villages(self) -> list[VillageRecord]:
        return self._list(VillageRecord, select(VillageRow).order_by(VillageRow.id))

    def upsert_teams(self, rows: list[TeamRecord]) -> None:
        self._upsert(TeamRow, [team_values(r) for r in rows])

    def list_teams(self) -> list[TeamRecord]:
        return self.list_team_records()

    def upsert_grids(self, rows: list[GridRecord]) -> None:
        """Village and team must exist (foreign keys)."""
        self._upsert(GridRow, [values_of(r) for r in rows])

    def list_grids(self, *, village_id: str | None = None, team_id: str | None = None) -> list[GridRecord]:
        query = select(GridRow).order_by(GridRow.id)
        if village_id is not None:
            query = query.where(GridRow.village_id == village_id)
        if team_id is not None:
            query = query.where(GridRow.team_id == team_id)
        return self._list(GridRecord, query)

    def upsert_users(self, rows: list[UserRecord]) -> None:
        """Insert or overwrite users by id; an existing user keeps its created_at and disabled flag."""
        for row in rows:
            check_choice(row.role, ROLES, "role")
            require_aware(row.created_at, "created_at")
            require_password_hash(row.password_hash)
        self._upsert(UserRow, [values_of(r) for r in rows], keep=("created_at", "disabled"))

    def get_user(self, user_id: str) -> UserRecord | None:
        return self._get(UserRecord, UserRow, user_id)

    def list_users(self, *, team_id: str | None = None) -> list[UserRecord]:
        query = select(UserRow).order_by(UserRow.id)
        if team_id is not None:
            query = query.where(UserRow.team_id == team_id)
        return self._list(UserRecord, query)

    # -- events ---------------------------------------------------------------------------------
    def add_event(self, rec: EventRecord) -> None:
        require_aware(rec.started_at, "started_at")
        if rec.ended_at is not None:
            require_aware(rec.ended_at, "ended_at")
        with self._sessions.begin() as session:
            session.add(EventRow(**values_of(rec)))

    def end_event(self, event_id: str, *, ended_at: datetime, best_score: float) -> None:
        require_aware(ended_at, "ended_at")
        self._update(EventRow, EventRow.id == event_id, event_id, ended_at=ended_at, best_score=best_score)

    def get_event(self, event_id: str) -> EventRecord | None:
        return self._get(EventRecord, EventRow, event_id)

    def list_events(self, camera_id: str, *, limit: int = 50) -> list[EventRecord]:
        """The camera's events, newest first."""
        check_limit(limit)
        query = (
            select(EventRow)
            .where(EventRow.camera_id == camera_id)
            .order_by(EventRow.started_at.desc(), EventRow.id.desc())
            .limit(limit)
        )
        return self._list(EventRecord, query)

    # -- alerts ---------------------------------------------------------------------------------
    def add_alert(self, alert: AlertRecord, fence: Fence | None = None) -> None:
        """Write the alert. With `fence` (a worker of many), only if the worker's lease token for the
        alert's camera is still the highest that claimed it: the claim and the row commit together, and
        `StaleFence` means nothing was written. The alert records the worker and its token."""
        if fence is not None:
            if fence.camera_id != alert.camera_id:
                raise ValueError(
                    f"the fence is for camera {fence.camera_id}, the alert for {alert.camera_id}"
                )
            alert = replace(alert, worker_id=fence.worker_id, fence_token=fence.token)
        require_aware(alert.created_at, "created_at")
        require_aware(alert.frame_time, "frame_time")
        check_choice(alert.clip_status, CLIP_STATUSES, "clip_status")
        if len(alert.bbox) != 4:
            raise ValueError(f"bbox needs 4 numbers, got {alert.bbox!r}")
        values = values_of(alert) | {
            "score": float(alert.score),
            "bbox": [float(v) for v in alert.bbox],
            "clip_error": short_error(alert.clip_error),
        }
        with self._sessions.begin() as session:
            if fence is not None:
                claim_in(session, self._engine.dialect.name, fence)
            session.add(AlertRow(**values))

    def get_alert(self, alert_id: str) -> AlertRecord | None:
        with self._sessions() as session:
            row = session.get(AlertRow, alert_id)
            return alert_record(row) if row is not None else None

    def list_alerts(
        self,
        limit: int = 50,
        before: tuple[datetime, str] | None = None,
        *,
        grids: Collection[str] | None = None,
        villages: Collection[str] | None = None,
        cameras: Collection[str] | None = None,
        labels: Collection[str] | None = None,
        severities: Collection[str] | None = None,
        statuses: Collection[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[AlertRecord]:
        """Newest first. For the next page pass `before=(last.created_at, last.id)` of the previous page.
        Filters (each None: any): the alert's grid, village, camera, label, severity; `statuses`: its
        incident's lifecycle status ("new" also matches alerts not yet in an incident); created at or after
        `since`, before `until`."""
        check_limit(limit)
        query = select(AlertRow).order_by(AlertRow.created_at.desc(), AlertRow.id.desc()).limit(limit)
        if before is not None:
            at, last_id = before
            query = query.where(
                or_(AlertRow.created_at < at, and_(AlertRow.created_at == at, AlertRow.id < last_id))
            )
        for column, values in (
            (AlertRow.grid, grids),
            (AlertRow.village, villages),
            (AlertRow.camera_id, cameras),
            (AlertRow.label, labels),
            (AlertRow.severity, severities),
        ):
            if values is not None:
                query = query.where(column.in_(list(values)))
        if statuses is not None:
            in_status = AlertRow.incident_id.in_(
                select(IncidentRow.id).where(IncidentRow.status.in_(list(statuses)))
            )
            query = query.where(
                or_(in_status, AlertRow.incident_id.is_(None)) if "new" in statuses else in_status
            )
        if since is not None:
            require_aware(since, "since")
            query = query.where(AlertRow.created_at >= since)
        if until is not None:
            require_aware(until, "until")
            query = query.where(AlertRow.created_at < until)
        with self._sessions() as session:
            return [alert_record(r) for r in session.scalars(query)]

    def list_alerts_older_than(
        self, cutoff: datetime, *, label: str | None = None, limit: int = 500
    ) -> list[AlertRecord]:
        """Alerts created before `cutoff` (of `label`, or of any label), oldest first: the retention sweep's
        candidates. Delete them and ask again for the next batch."""
        require_aware(cutoff, "cutoff")
        check_limit(limit)
        query = select(AlertRow).where(AlertRow.created_at < cutoff)
        if label is not None:
            query = query.where(AlertRow.label == label)
        query = query.order_by(AlertRow.created_at, AlertRow.id).limit(limit)
        with self._sessions() as session:
            return [alert_record(r) for r in session.scalars(query)]

    def delete_alert(self, alert_id: str) -> DeletedAlert | None:
        """Delete the alert with its clips, actions and deliveries in one transaction; None if it was gone.

        The audit log keeps its entries (they name the alert only as text)."""
        with self._sessions.begin() as session:
            return delete_alert_rows(session, alert_id)

    def list_alerts_oldest(
        self,
        *,
        before: datetime | None = None,
        label: str | None = None,
        other_than: Collection[str] = (),
        after: tuple[datetime, str] | None = None,
        settled_only: bool = False,
        unspooled_only: bool = False,
        limit: int = 500,
    ) -> list[AlertRecord]:
        """Alerts oldest first, by (created_at, id), for the retention sweeper.

        `before`: created before it; `label`: of this label; `other_than`: of none of these labels;
        `after`: keyset paging, pass `(last.created_at, last.id)` of the previous page (rows the caller kept
        are not returned again); `settled_only`: leave out alerts something of which may still land in the
        store (the alert's clip summary "pending", a clip row "pending" or "spooled", or a snapshot or
        thumbnail waiting in a spool); `unspooled_only`: leave out only those with a clip row or an image
        on its way through a spool, not those whose clip summary alone is "pending" (a first clip still
        being recorded, minutes at most after the alert; or never coming, its worker having died)."""
        check_limit(limit)
        query = _oldest_filter(select(AlertRow), before, label, other_than)
        if after is not None:
            at, last_id = after
            require_aware(at, "after")
            query = query.where(
                or_(AlertRow.created_at > at, and_(AlertRow.created_at == at, AlertRow.id > last_id))
            )
        if settled_only or unspooled_only:
            query = query.where(~in_flight(recording=settled_only))
        query = query.order_by(AlertRow.created_at, AlertRow.id).limit(limit)
        with self._sessions() as session:
            return [alert_record(r) for r in session.scalars(query)]

    def count_alerts_in_flight(
        self,
        *,
        before: datetime | None = None,
        label: str | None = None,
        other_than: Collection[str] = (),
        spooling_only: bool = False,
    ) -> int:
        """How many alerts (with the filters of `list_alerts_oldest`) `settled_only` leaves out, or with
        `spooling_only` those `unspooled_only` leaves out. What the retention sweeper reports as kept."""
        query = _oldest_filter(select(func.count()).select_from(AlertRow), before, label, other_than)
        with self._sessions() as session:
            return int(session.scalar(query.where(in_flight(recording=not spooling_only))) or 0)

    def stored_image_bytes(self, *, snapshot_estimate: int, thumbnail_estimate: int) -> int:
        """Total bytes of the stored snapshots and thumbnails (those with a key), for retention by size.

        An image whose size was not recorded (stored before migration 0005) counts for the estimate."""
        total = func.coalesce(
            func.sum(
                case(
                    (AlertRow.snapshot_key.is_(None), 0),
                    else_=func.coalesce(AlertRow.snapshot_bytes, snapshot_estimate),
                )
                + case(
                    (AlertRow.thumbnail_key.is_(None), 0),
                    else_=func.coalesce(AlertRow.thumbnail_bytes, thumbnail_estimate),
                )
            ),
            0,
        )
        with self._sessions() as session:
            return int(session.scalar(select(total)) or 0)

    def count_snapshots(self) -> int:
        """Alerts whose snapshot is in the store (a snapshot_key is set once it is uploaded)."""
        query = select(func.count()).select_from(AlertRow).where(AlertRow.snapshot_key.is_not(None))
        with self._sessions() as session:
            return int(session.scalar(query) or 0)

    def delete_alert_audited(
        self,
        alert_id: str,
        *,
        actor: str,
        action: str,
        details: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> DeletedAlert | None:
        """`delete_alert` and its audit entry (target `alert:{id}`) in one transaction: both or neither.

        The entry's details get `object_keys`, `clip_bytes`, `snapshot_bytes` and `thumbnail_bytes` (None:
        not recorded) of what the rows referenced. None, and no entry, if the alert was already gone (another
        sweeper got there first)."""
        details = dict(details or {})
        require_no_secret_keys(details)
        json.dumps(details)
        when = at_or_now(at)
        with self._sessions.begin() as session:
            deleted = delete_alert_rows(session, alert_id)
            if deleted is None:
                return None
            details |= {
                "object_keys": list(deleted.object_keys),
                "clip_bytes": deleted.clip_bytes,
                "snapshot_bytes": deleted.snapshot_bytes,
                "thumbnail_bytes": deleted.thumbnail_bytes,
            }
            session.add(
                AuditRow(at=when, actor=actor, action=action, target=f"alert:{alert_id}", details=details)
            )
            return deleted

    def set_clip(
        self,
        alert_id: str,
        *,
        key: str | None,
        status: str,
        duration_s: float | None = None,
        error: str | None = None,
    ) -> None:
        """The alert's clip summary (what the feed shows); the clip files themselves are `add_clip` rows."""
        check_choice(status, CLIP_STATUSES, "clip status")
        self._update(
            AlertRow,
            AlertRow.id == alert_id,
            alert_id,
            clip_key=key,
            clip_status=status,
            clip_duration_s=duration_s,
            clip_error=short_error(error),
        )

    def set_snapshot(
        self,
        alert_id: str,
        key: str,
        *,
        size_bytes: int | None = None,
        spooled_at: datetime | None = None,
    ) -> None:
        """The snapshot is in the store: its key and size (None: not known). A best frame that replaces it
        later (same key) sets its own size. `spooled_at`: when the stored item was spooled; it ends the
        pending mark that `mark_image_pending` set at or before then (not a later one)."""
        self._set_image("snapshot", alert_id, key, size_bytes, spooled_at)

    def set_thumbnail(
        self,
        alert_id: str,
        key: str,
        *,
        size_bytes: int | None = None,
        spooled_at: datetime | None = None,
    ) -> None:
        """The thumbnail is in the store; as `set_snapshot`."""
        self._set_image("thumbnail", alert_id, key, size_bytes, spooled_at)

    def mark_image_pending(self, alert_id: str, kind: ImageKind, since: datetime) -> None:
        """The alert's snapshot or thumbnail is about to go into a spool (call it before the spool write):
        retention keeps the alert until the upload is confirmed (`set_snapshot` / `set_thumbnail` with
        `spooled_at`) or the item is given up (`clear_image_pending`). KeyError if the alert is gone."""
        check_choice(kind, IMAGE_KINDS, "image kind")
        require_aware(since, "since")
        self._update(AlertRow, AlertRow.id == alert_id, alert_id, **{f"{kind}_pending_since": since})

    def clear_image_pending(self, alert_id: str, kind: ImageKind, spooled_at: datetime) -> None:
        """A spooled image will not be stored (not written, evicted, refused): end its pending mark, unless
        a later image was marked meanwhile. Nothing happens if the alert is gone."""
        check_choice(kind, IMAGE_KINDS, "image kind")
        require_aware(spooled_at, "spooled_at")
        with self._sessions.begin() as session:
            session.execute(
                update(AlertRow)
                .where(AlertRow.id == alert_id)
                .values(**{f"{kind}_pending_since": _pending_after(kind, spooled_at)}),
                execution_options={"synchronize_session": False},
            )

    # -- clips ----------------------------------------------------------------------------------
    def add_clip(
        self,
        alert_id: str,
        object_key: str,
        *,
        sequence: int = 0,
        status: ClipFileStatus = "pending",
        facts: ClipFacts | None = None,
    ) -> ClipRecord:
        """A clip file of an alert; `sequence` 1, 2... for the continuation clips of a long event."""
        check_choice(status, CLIP_FILE_STATUSES, "clip status")
        if sequence < 0:
            raise ValueError(f"sequence must be >= 0, got {sequence}")
        now = utcnow()
        row = ClipRow(
            id=new_id(),
            alert_id=alert_id,
            object_key=object_key,
            sequence=sequence,
            status=status,
            created_at=now,
            stored_at=now if status == "stored" else None,
            **(facts_values(facts) if facts is not None else {}),
        )
        with self._sessions.begin() as session:
            session.add(row)
        return to_record(ClipRecord, row)

    def update_clip(
        self,
        clip_id: str,
        status: ClipFileStatus,
        *,
        facts: ClipFacts | None = None,
        error: str | None = None,
    ) -> None:
        """Move a clip to `status`; `error` is written as given (None clears it), `stored_at` is set on
        "stored", and `facts`, when given, replace what was known."""
        check_choice(status, CLIP_FILE_STATUSES, "clip status")
        values: dict[str, Any] = {"status": status, "error": short_error(error)}
        if status == "stored":
            values["stored_at"] = utcnow()
        if facts is not None:
            values |= facts_values(facts)
        self._update(ClipRow, ClipRow.id == clip_id, clip_id, **values)

    def get_clip(self, clip_id: str) -> ClipRecord | None:
        return self._get(ClipRecord, ClipRow, clip_id)

    def list_clips(self, alert_id: str) -> list[ClipRecord]:
        """The alert's clips in sequence order."""
        query = select(ClipRow).where(ClipRow.alert_id == alert_id).order_by(ClipRow.sequence)
        return self._list(ClipRecord, query)

    def stored_clip_bytes(self) -> int:
        """Total size_bytes of clips in the object store ("stored"), for retention by size."""
        query = select(func.coalesce(func.sum(ClipRow.size_bytes), 0)).where(ClipRow.status == "stored")
        with self._sessions() as session:
            return int(session.scalar(query) or 0)

    # -- alert actions and deliveries -----------------------------------------------------------
    def add_alert_action(
        self,
        alert_id: str,
        action: AlertActionKind,
        *,
        user_id: str | None = None,
        note: str | None = None,
        at: datetime | None = None,
    ) -> AlertActionRecord:
        check_choice(action, ALERT_ACTIONS, "action")
        row = AlertActionRow(alert_id=alert_id, user_id=user_id, action=action, note=note, at=at_or_now(at))
        with self._sessions.begin() as session:
            session.add(row)
            session.flush()  # assigns the id
        return to_record(AlertActionRecord, row)

    def list_alert_actions(self, alert_id: str) -> list[AlertActionRecord]:
        """Oldest first: the alert's story."""
        query = select(AlertActionRow).where(AlertActionRow.alert_id == alert_id).order_by(AlertActionRow.id)
        return self._list(AlertActionRecord, query)

    def record_delivery(
        self,
        alert_id: str,
        channel: str,
        target: str,
        status: DeliveryStatus,
        *,
        error: str | None = None,
        at: datetime | None = None,
        key: str | None = None,
        attempts: int = 1,
        incident_id: str | None = None,
        kind: str | None = None,
    ) -> DeliveryRecord:
        """A delivery of a notification through a notifier to a target, under `key` (default
        alert:channel:target): the first record inserts, later ones add their attempts."""
        check_choice(status, DELIVERY_STATUSES, "delivery status")
        require_no_credentials(target, "delivery target")
        key = key or f"{alert_id}:{channel}:{target}"
        values = {
            "key": key,
            "alert_id": alert_id,
            "incident_id": incident_id,
            "kind": kind,
            "channel": channel,
            "target": target,
            "status": status,
            "attempts": attempts,
            "last_error": short_error(error),
            "at": at_or_now(at),
        }
        with self._sessions.begin() as session:
            session.execute(delivery_upsert(self.dialect), values)
            row = session.get(DeliveryRow, key, populate_existing=True)
            assert row is not None
            return to_record(DeliveryRecord, row)

    def delivery_done(self, key: str) -> bool:
        """Whether the delivery under `key` was made (sent) or cannot be (the target is gone)."""
        with self._sessions() as session:
            status = session.scalar(select(DeliveryRow.status).where(DeliveryRow.key == key))
        return status in ("sent", "gone")

    def list_deliveries(self, alert_id: str) -> list[DeliveryRecord]:
        query = (
            select(DeliveryRow)
            .where(DeliveryRow.alert_id == alert_id)
            .order_by(DeliveryRow.channel, DeliveryRow.target, DeliveryRow.key)
        )
        return self._list(DeliveryRecord, query)

    # -- audit log ------------------------------------------------------------------------------
    def add_audit(
        self,
        actor: str,
        action: str,
        target: str,
        details: dict[str, Any] | None = None,
        *,
        at: datetime | None = None,
    ) -> AuditRecord:
        """Record who did what to what. `details` must be JSON and carry no secrets (refused by key name)."""
        details = dict(details or {})
        require_no_secret_keys(details)
        json.dumps(details)  # fail here, not half-way through a flush
        row = AuditRow(at=at_or_now(at), actor=actor, action=action, target=target, details=details)
        with self._sessions.begin() as session:
            session.add(row)
            session.flush()
        return to_record(AuditRecord, row)

    def list_audit(
        self, *, limit: int = 50, before_id: int | None = None, target: str | None = None
    ) -> list[AuditRecord]:
        """Newest first; for the next page pass `before_id` = the last id of the previous page."""
        check_limit(limit)
        query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(AuditRow.id < before_id)
        if target is not None:
            query = query.where(AuditRow.target == target)
        return self._list(AuditRecord, query)

    # -- helpers --------------------------------------------------------------------------------
    def _set_image(
        self,
        kind: ImageKind,
        alert_id: str,
        key: str,
        size_bytes: int | None,
        spooled_at: datetime | None,
    ) -> None:
        if size_bytes is not None and size_bytes < 0:
            raise ValueError(f"negative {kind} size {size_bytes}")
        values: dict[str, Any] = {f"{kind}_key": key, f"{kind}_bytes": size_bytes}
        if spooled_at is not None:
            require_aware(spooled_at, "spooled_at")
            values[f"{kind}_pending_since"] = _pending_after(kind, spooled_at)
        self._update(AlertRow, AlertRow.id == alert_id, alert_id, **values)

    def _upsert(self, model: type[Base], values: list[dict[str, Any]], keep: tuple[str, ...] = ()) -> None:
        if values:
            with self._sessions.begin() as session:
                session.execute(upsert_statement(self.dialect, model, keep), values)

    def _get(self, cls: type[R], model: type[Base], key: str) -> R | None:
        with self._sessions() as session:
            row = session.get(model, key)
            return to_record(cls, row) if row is not None else None

    def _list(self, cls: type[R], query: Any) -> list[R]:
        with self._sessions() as session:
            return [to_record(cls, r) for r in session.scalars(query)]

    def _update(self, model: type[Base], where: Any, key: str, **values: Any) -> None:
        # A lone UPDATE: on SQLite the write lock is taken by the first statement, so busy_timeout applies
        # (a read followed by a write could fail at once with SQLITE_BUSY under concurrent writers).
        with self._sessions.begin() as session:
            result = session.execute(
                update(model).where(where).values(**values),
                execution_options={"synchronize_session": False},
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise KeyError(f"no {model.__tablename__} row {key!r}")


def _oldest_filter(
    query: Select[Any], before: datetime | None, label: str | None, other_than: Collection[str]
) -> Select[Any]:
    if before is not None:
        require_aware(before, "before")
        query = query.where(AlertRow.created_at < before)
    if label is not None:
        query = query.where(AlertRow.label == label)
    if other_than:
        query = query.where(AlertRow.label.not_in(list(other_than)))
    return query


def _pending_after(kind: ImageKind, spooled_at: datetime) -> ColumnElement[datetime | None]:
    """The image's pending mark once the item spooled at `spooled_at` is done with: cleared if it was set at
    or before then, kept if a later image (a best frame replacing the snapshot) was marked since."""
    column = getattr(AlertRow, f"{kind}_pending_since")
    return case((column <= spooled_at, None), else_=column)
