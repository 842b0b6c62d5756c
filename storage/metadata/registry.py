"""The registry's part of `MetadataDB`: cameras, villages, grids, teams and users created, changed and
deleted one at a time (the admin API) or many at once (a CSV import, the config at start).

Every write is one transaction. A create of an id that exists raises `RowExists`; a change or delete of one
that does not raises `KeyError`; deleting something other rows still refer to (a village with grids, a grid
with cameras, a team with grids or members) raises `RowInUse` naming them, and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from storage.metadata.checks import check_choice, require_aware, require_redacted
from storage.metadata.records import (
    ROLES,
    SOURCES,
    CameraRecord,
    GridRecord,
    RosterEntry,
    TeamRecord,
    VillageRecord,
    utcnow,
    values_of,
)
from storage.metadata.rows import to_record, upsert_statement
from storage.metadata.tables import Base, CameraRow, GridRow, TeamRow, UserRow, VillageRow

# what a config camera keeps from the database when the config is written again at start
KEPT_BY_CAMERAS = ("created_at", "probe", "probed_at")


class RowExists(ValueError):
    """The id is taken."""


class RowInUse(ValueError):
    """Other rows still refer to this one."""


def team_record(row: TeamRow) -> TeamRecord:
    roster = tuple(RosterEntry(str(s["user"]), str(s["schedule"])) for s in row.roster or ())
    return TeamRecord(id=row.id, name=row.name, source=row.source, roster=roster)  # type: ignore[arg-type]


def team_values(team: TeamRecord) -> dict[str, Any]:
    values = values_of(team)
    values["roster"] = [{"user": s.user, "schedule": s.schedule} for s in team.roster] or None
    return values


def _check_camera(camera: CameraRecord) -> None:
    require_aware(camera.updated_at, "updated_at")
    require_redacted(camera.url_redacted)
    if camera.record_url_redacted is not None:
        require_redacted(camera.record_url_redacted)
    check_choice(camera.source, SOURCES, "source")


class RegistryStore:
    """Mixed into `MetadataDB` (which provides the session factory)."""

    _sessions: sessionmaker[Session]
    _engine: Engine

    # -- cameras ----------------------------------------------------------------------------------

    def get_camera(self, camera_id: str) -> CameraRecord | None:
        with self._sessions() as session:
            row = session.get(CameraRow, camera_id)
            return to_record(CameraRecord, row) if row is not None else None

    def create_camera(self, camera: CameraRecord) -> CameraRecord:
        _check_camera(camera)
        camera = camera if camera.created_at is not None else replace(camera, created_at=camera.updated_at)
        self._create(CameraRow, camera.id, values_of(camera), "camera")
        return camera

    def update_camera(self, camera_id: str, **values: Any) -> CameraRecord:
        """Change the given columns (and `updated_at`, to now unless given); the camera as it is after."""
        values.setdefault("updated_at", utcnow())
        require_aware(values["updated_at"], "updated_at")
        for key in ("url_redacted", "record_url_redacted"):
            if values.get(key) is not None:
                require_redacted(values[key])
        self._patch(CameraRow, camera_id, values, "camera")
        camera = self.get_camera(camera_id)
        assert camera is not None
        return camera

    def set_camera_probe(self, camera_id: str, probe: Mapping[str, Any], at: datetime) -> None:
        """Record a probe's result; unlike an edit, it leaves `updated_at` (workers reload on that)."""
        require_aware(at, "at")
        self._patch(CameraRow, camera_id, {"probe": dict(probe), "probed_at": at}, "camera")

    def delete_camera(self, camera_id: str) -> None:
        """Forget the camera; its alerts, clips and events stay (they name the camera by id)."""
        self._delete(CameraRow, camera_id, "camera")

    def write_cameras(
        self, cameras: Iterable[CameraRecord], *, keep: tuple[str, ...] = KEPT_BY_CAMERAS
    ) -> int:
        """Insert or overwrite many cameras in one transaction (the columns in `keep` keep their values on
        rows that exist); how many were written."""
        rows = []
        for camera in cameras:
            _check_camera(camera)
            rows.append(values_of(camera) | {"created_at": camera.created_at or camera.updated_at})
        if rows:
            with self._sessions.begin() as session:
                session.execute(upsert_statement(self._engine.dialect.name, CameraRow, keep), rows)
        return len(rows)

    def delete_config_cameras_except(self, keep_ids: Iterable[str]) -> list[str]:
        """Delete the config's cameras that the config no longer names (API cameras stay); their ids."""
        keep = set(keep_ids)
        with self._sessions.begin() as session:
            ids = session.scalars(select(CameraRow.id).where(CameraRow.source == "config")).all()
            gone = sorted(set(ids) - keep)
            if gone:
                session.execute(delete(CameraRow).where(CameraRow.id.in_(gone)))
        return gone

    def count_cameras(self, *, grid: str | None = None) -> int:
        query = select(func.count()).select_from(CameraRow)
        if grid is not None:
            query = query.where(CameraRow.grid == grid)
        with self._sessions() as session:
            return int(session.scalar(query) or 0)

    def camera_fingerprint(self) -> tuple[int, datetime | None]:
        """How many cameras there are and the newest `updated_at`: a worker that polls reloads when it
        changes (every create, edit and delete changes one of the two)."""
        with self._sessions() as session:
            count, newest = session.execute(select(func.count(), func.max(CameraRow.updated_at))).one()
            return int(count), newest

    # -- villages, grids, teams ------------------------------------------------------------------

    def get_village(self, village_id: str) -> VillageRecord | None:
        with self._sessions() as session:
            row = session.get(VillageRow, village_id)
            return to_record(VillageRecord, row) if row is not None else None

    def create_village(self, village: VillageRecord) -> None:
        self._create(VillageRow, village.id, values_of(village), "village")

    def update_village(self, village_id: str, **values: Any) -> None:
        self._patch(VillageRow, village_id, values, "village")

    def delete_village(self, village_id: str) -> None:
        with self._sessions.begin() as session:
            grids = session.scalars(select(GridRow.id).where(GridRow.village_id == village_id).limit(5)).all()
            cameras = session.scalars(
                select(CameraRow.id).where(CameraRow.village == village_id).limit(5)
            ).all()
            if grids or cameras:
                raise RowInUse(_in_use("village", village_id, grids=grids, cameras=cameras))
            self._delete_in(session, VillageRow, village_id, "village")

    def get_grid(self, grid_id: str) -> GridRecord | None:
        with self._sessions() as session:
            row = session.get(GridRow, grid_id)
            return to_record(GridRecord, row) if row is not None else None

    def create_grid(self, grid: GridRecord) -> None:
        self._create(GridRow, grid.id, values_of(grid), "grid")

    def update_grid(self, grid_id: str, **values: Any) -> None:
        self._patch(GridRow, grid_id, values, "grid")

    def delete_grid(self, grid_id: str) -> None:
        with self._sessions.begin() as session:
            cameras = _ids(session, CameraRow.id, CameraRow.grid == grid_id)
            if cameras:
                raise RowInUse(_in_use("grid", grid_id, cameras=cameras))
            self._delete_in(session, GridRow, grid_id, "grid")

    def get_team(self, team_id: str) -> TeamRecord | None:
        with self._sessions() as session:
            row = session.get(TeamRow, team_id)
            return team_record(row) if row is not None else None

    def list_team_records(self) -> list[TeamRecord]:
        with self._sessions() as session:
            return [team_record(r) for r in session.scalars(select(TeamRow).order_by(TeamRow.id))]

    def create_team(self, team: TeamRecord) -> None:
        self._create(TeamRow, team.id, team_values(team), "team")

    def update_team(
        self, team_id: str, *, name: str | None = None, roster: Iterable[RosterEntry] | None = None
    ) -> None:
        values: dict[str, Any] = {}
        if name is not None:
            values["name"] = name
        if roster is not None:
            values["roster"] = [{"user": s.user, "schedule": s.schedule} for s in roster] or None
        if values:
            self._patch(TeamRow, team_id, values, "team")
        elif self.get_team(team_id) is None:
            raise KeyError(f"no team {team_id!r}")

    def delete_team(self, team_id: str) -> None:
        with self._sessions.begin() as session:
            grids = _ids(session, GridRow.id, GridRow.team_id == team_id)
            users = _ids(session, UserRow.id, UserRow.team_id == team_id)
            if grids or users:
                raise RowInUse(_in_use("team", team_id, grids=grids, members=users))
            self._delete_in(session, TeamRow, team_id, "team")

    def update_user(self, user_id: str, **values: Any) -> None:
        """Change a user's name, role or team (the password and the disabled flag have their own calls)."""
        if "role" in values:
            check_choice(values["role"], ROLES, "role")
        self._patch(UserRow, user_id, values, "user")

    # -- the generic steps -----------------------------------------------------------------------

    def _create(self, model: type[Base], key: str, values: dict[str, Any], what: str) -> None:
        with self._sessions.begin() as session:
            if session.get(model, key) is not None:
                raise RowExists(f"{what} {key!r} exists")
            session.add(model(**values))

    def _patch(self, model: type[Base], key: str, values: dict[str, Any], what: str) -> None:
        table: Any = model
        with self._sessions.begin() as session:
            result = session.execute(
                update(model).where(table.id == key).values(**values),
                execution_options={"synchronize_session": False},
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise KeyError(f"no {what} {key!r}")

    def _delete(self, model: type[Base], key: str, what: str) -> None:
        with self._sessions.begin() as session:
            self._delete_in(session, model, key, what)

    @staticmethod
    def _delete_in(session: Session, model: type[Base], key: str, what: str) -> None:
        table: Any = model
        result = session.execute(delete(model).where(table.id == key))
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise KeyError(f"no {what} {key!r}")


def _ids(session: Session, column: Any, where: Any) -> list[str]:
    """Up to 5 ids of the rows that refer to the one being deleted, for the error."""
    return list(session.scalars(select(column).where(where).order_by(column).limit(5)))


def _in_use(what: str, key: str, **referrers: Iterable[str]) -> str:
    parts = [f"{name} {', '.join(ids)}" for name, ids in referrers.items() if ids]
    return f"{what} {key!r} is still used by " + "; ".join(parts) + " (showing up to 5 of each)"
