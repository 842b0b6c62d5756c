"""HTTP routes of the organisation: villages, grids, teams with their members and rosters, users.

Everyone logged in reads what is theirs (a patrol member: the villages and grids of their team, their own
team); admins create, change and delete. Objects of the config file (`source: "config"`) are rewritten at
every start, so they cannot be changed here (409), except a config user's password and disabled flag,
which the config does not hold. A delete of something still in use (a village with grids, a grid with
cameras, a team with grids or members) gives 409 naming what uses it. Deleting a user disables it and ends
its sessions and tokens; the row stays for the audit trail.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field

from gridwatch.api_scope import Admin, ViewScope
from gridwatch.api_state import AppState, State
from gridwatch.auth.deps import auth_of
from gridwatch.auth.passwords import MAX_LENGTH, WeakPassword
from gridwatch.auth.principal import Principal
from gridwatch.auth.service import Auth
from storage.metadata import (
    ROLES,
    GridRecord,
    RosterEntry,
    RowExists,
    RowInUse,
    TeamRecord,
    UserRecord,
    VillageRecord,
)

router = APIRouter(prefix="/api/v1", tags=["organisation"])

ID = r"^[a-z0-9][a-z0-9_-]{0,62}$"
AuthDep = Annotated[Auth, Depends(auth_of)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class VillageIn(_In):
    id: str = Field(..., pattern=ID)
    name: str = Field(..., min_length=1, max_length=256)


class VillagePatch(_In):
    name: str = Field(..., min_length=1, max_length=256)


class VillageOut(BaseModel):
    id: str
    name: str
    source: str


class GridIn(_In):
    id: str = Field(..., pattern=ID)
    name: str = Field(..., min_length=1, max_length=256)
    village: str = Field(..., min_length=1, max_length=128)
    team: str | None = Field(None, max_length=128, description="The patrol team; empty: the fallback team")


class GridPatch(_In):
    name: str | None = Field(None, min_length=1, max_length=256)
    village: str | None = Field(None, min_length=1, max_length=128)
    team: str | None = Field(None, max_length=128, description="null: no team (the fallback team)")


class GridOut(BaseModel):
    id: str
    name: str
    village: str
    team: str | None
    source: str


class Shift(_In):
    user: str = Field(..., min_length=1, max_length=128)
    schedule: str = Field(..., min_length=1, max_length=128, description="A schedule of the config")


class TeamIn(_In):
    id: str = Field(..., pattern=ID)
    name: str = Field(..., min_length=1, max_length=256)
    roster: list[Shift] = Field(default_factory=list, max_length=500)


class TeamPatch(_In):
    name: str | None = Field(None, min_length=1, max_length=256)
    roster: list[Shift] | None = Field(None, max_length=500)


class TeamOut(BaseModel):
    id: str
    name: str
    source: str
    members: list[str]
    roster: list[Shift]


class UserIn(_In):
    id: str = Field(..., pattern=ID)
    name: str = Field(..., min_length=1, max_length=256)
    role: str = Field(..., description=f"One of {', '.join(ROLES)}")
    team: str | None = Field(None, max_length=128)
    password: str = Field(..., min_length=1, max_length=MAX_LENGTH)


class UserPatch(_In):
    name: str | None = Field(None, min_length=1, max_length=256)
    role: str | None = None
    team: str | None = Field(None, max_length=128)
    disabled: bool | None = None
    password: str | None = Field(None, min_length=1, max_length=MAX_LENGTH)


class UserOut(BaseModel):
    id: str
    name: str
    role: str
    team: str | None
    disabled: bool
    source: str
    has_password: bool


def _missing(what: str) -> HTTPException:
    return HTTPException(status_code=404, detail=f"{what} not found")


def _conflict(detail: str) -> HTTPException:
    return HTTPException(status_code=409, detail=detail)


def _invalid(field: str, message: str) -> HTTPException:
    return HTTPException(status_code=422, detail=[{"field": field, "message": message}])


def _api_only(source: str, what: str) -> None:
    if source == "config":
        raise _conflict(f"{what} is defined in the config file: change it there")


def _audit(s: AppState, who: str, action: str, target: str, details: dict[str, Any] | None = None) -> None:
    s.db.add_audit(who, action, target, details or {})


def _delete(
    s: AppState,
    who: Principal,
    what: str,
    key: str,
    get: Callable[[str], VillageRecord | GridRecord | TeamRecord | None],
    delete: Callable[[str], None],
) -> Response:
    """Delete an object the API made: 404 if there is none, 409 if it is the config's or still in use."""
    found = get(key) if len(key) <= 128 else None
    if found is None:
        raise _missing(what)
    _api_only(found.source, f"{what} {key!r}")
    try:
        delete(key)
    except RowInUse as exc:
        raise _conflict(str(exc)) from None
    _audit(s, who.user_id, f"{what}.delete", f"{what}:{key}")
    return Response(status_code=204)


# -- villages -----------------------------------------------------------------------------------------


@router.get("/villages", response_model=list[VillageOut])
def list_villages(s: State, scope: ViewScope) -> list[VillageOut]:
    """Every village for staff; a patrol member's: those of their grids."""
    villages = s.db.list_villages()
    if scope.grids is not None:
        mine = {g.village_id for g in s.db.list_grids() if scope.sees(g.id)}
        villages = [v for v in villages if v.id in mine]
    return [VillageOut(id=v.id, name=v.name, source=v.source) for v in villages]


@router.post("/villages", response_model=VillageOut, status_code=201)
def create_village(body: VillageIn, s: State, who: Admin) -> VillageOut:
    try:
        s.db.create_village(VillageRecord(body.id, body.name, source="api"))
    except RowExists as exc:
        raise _conflict(str(exc)) from None
    _audit(s, who.user_id, "village.create", f"village:{body.id}")
    return VillageOut(id=body.id, name=body.name, source="api")


@router.patch("/villages/{village_id}", response_model=VillageOut)
def update_village(village_id: str, body: VillagePatch, s: State, who: Admin) -> VillageOut:
    village = s.db.get_village(village_id)
    if village is None:
        raise _missing("village")
    _api_only(village.source, f"village {village_id!r}")
    s.db.update_village(village_id, name=body.name)
    _audit(s, who.user_id, "village.update", f"village:{village_id}")
    return VillageOut(id=village_id, name=body.name, source=village.source)


@router.delete("/villages/{village_id}", status_code=204)
def delete_village(village_id: str, s: State, who: Admin) -> Response:
    return _delete(s, who, "village", village_id, s.db.get_village, s.db.delete_village)


# -- grids --------------------------------------------------------------------------------------------


def _grid_out(g: GridRecord) -> GridOut:
    return GridOut(id=g.id, name=g.name, village=g.village_id, team=g.team_id, source=g.source)


def _check_grid_refs(s: AppState, village: str | None, team: str | None) -> None:
    if village is not None and s.db.get_village(village) is None:
        raise _invalid("village", f"unknown village {village!r}")
    if team is not None and s.db.get_team(team) is None:
        raise _invalid("team", f"unknown team {team!r}")


@router.get("/grids", response_model=list[GridOut])
def list_grids(s: State, scope: ViewScope) -> list[GridOut]:
    return [_grid_out(g) for g in s.db.list_grids() if scope.sees(g.id)]


@router.post("/grids", response_model=GridOut, status_code=201)
def create_grid(body: GridIn, s: State, who: Admin) -> GridOut:
    _check_grid_refs(s, body.village, body.team)
    grid = GridRecord(body.id, body.name, body.village, body.team, source="api")
    try:
        s.db.create_grid(grid)
    except RowExists as exc:
        raise _conflict(str(exc)) from None
    _audit(s, who.user_id, "grid.create", f"grid:{body.id}", {"village": body.village, "team": body.team})
    return _grid_out(grid)


@router.patch("/grids/{grid_id}", response_model=GridOut)
def update_grid(grid_id: str, body: GridPatch, s: State, who: Admin) -> GridOut:
    grid = s.db.get_grid(grid_id)
    if grid is None:
        raise _missing("grid")
    _api_only(grid.source, f"grid {grid_id!r}")
    changes = body.model_dump(exclude_unset=True)
    if ("name" in changes and changes["name"] is None) or (
        "village" in changes and changes["village"] is None
    ):
        raise _invalid("name" if changes.get("name", "") is None else "village", "may not be null")
    _check_grid_refs(s, changes.get("village"), changes.get("team"))
    if "village" in changes and changes["village"] != grid.village_id and s.db.count_cameras(grid=grid_id):
        raise _conflict(f"grid {grid_id!r} has cameras: move them before moving the grid to another village")
    values = {k: v for k, v in (("name", changes.get("name")), ("village_id", changes.get("village"))) if v}
    if "team" in changes:
        values["team_id"] = changes["team"]
    if values:
        s.db.update_grid(grid_id, **values)
    _audit(s, who.user_id, "grid.update", f"grid:{grid_id}", {"fields": sorted(changes)})
    updated = s.db.get_grid(grid_id)
    assert updated is not None
    return _grid_out(updated)


@router.delete("/grids/{grid_id}", status_code=204)
def delete_grid(grid_id: str, s: State, who: Admin) -> Response:
    return _delete(s, who, "grid", grid_id, s.db.get_grid, s.db.delete_grid)


# -- teams --------------------------------------------------------------------------------------------


def _team_out(s: AppState, team: TeamRecord) -> TeamOut:
    members = [u.id for u in s.db.list_users(team_id=team.id)]
    if s.settings is not None:  # the config may list members whose user entry names no team
        for t in s.settings.teams:
            if t.id == team.id:
                members += [m for m in t.members if m not in members]
    roster = [Shift(user=x.user, schedule=x.schedule) for x in team.roster]
    return TeamOut(id=team.id, name=team.name, source=team.source, members=members, roster=roster)


def _check_roster(s: AppState, team_id: str, roster: list[Shift]) -> None:
    schedules = {x.name for x in s.settings.schedules} if s.settings is not None else set()
    members = {u.id for u in s.db.list_users(team_id=team_id)}
    for i, shift in enumerate(roster):
        if shift.schedule not in schedules:
            raise _invalid(
                f"roster.{i}.schedule", f"unknown schedule {shift.schedule!r} (schedules are in the config)"
            )
        if shift.user not in members:
            raise _invalid(f"roster.{i}.user", f"user {shift.user!r} is not a member of team {team_id!r}")


@router.get("/teams", response_model=list[TeamOut])
def list_teams(s: State, scope: ViewScope) -> list[TeamOut]:
    """Every team for staff; a patrol member's own."""
    teams = s.db.list_teams()
    if scope.grids is not None:
        teams = [t for t in teams if t.id == scope.principal.team_id]
    return [_team_out(s, t) for t in teams]


@router.get("/teams/{team_id}", response_model=TeamOut)
def get_team(team_id: str, s: State, scope: ViewScope) -> TeamOut:
    team = s.db.get_team(team_id) if len(team_id) <= 128 else None
    if team is None or (scope.grids is not None and team_id != scope.principal.team_id):
        raise _missing("team")
    return _team_out(s, team)


@router.post("/teams", response_model=TeamOut, status_code=201)
def create_team(body: TeamIn, s: State, who: Admin) -> TeamOut:
    if body.roster:
        raise _invalid("roster", "a new team has no members yet: add users to it, then set its roster")
    team = TeamRecord(body.id, body.name, source="api")
    try:
        s.db.create_team(team)
    except RowExists as exc:
        raise _conflict(str(exc)) from None
    _audit(s, who.user_id, "team.create", f"team:{body.id}")
    return _team_out(s, team)


@router.patch("/teams/{team_id}", response_model=TeamOut)
def update_team(team_id: str, body: TeamPatch, s: State, who: Admin) -> TeamOut:
    team = s.db.get_team(team_id)
    if team is None:
        raise _missing("team")
    _api_only(team.source, f"team {team_id!r}")
    if body.roster is not None:
        _check_roster(s, team_id, body.roster)
    roster = [RosterEntry(x.user, x.schedule) for x in body.roster] if body.roster is not None else None
    s.db.update_team(team_id, name=body.name, roster=roster)
    _audit(s, who.user_id, "team.update", f"team:{team_id}", {"fields": sorted(body.model_fields_set)})
    updated = s.db.get_team(team_id)
    assert updated is not None
    return _team_out(s, updated)


@router.delete("/teams/{team_id}", status_code=204)
def delete_team(team_id: str, s: State, who: Admin) -> Response:
    return _delete(s, who, "team", team_id, s.db.get_team, s.db.delete_team)


# -- users --------------------------------------------------------------------------------------------


def _user_out(u: UserRecord) -> UserOut:
    return UserOut(
        id=u.id,
        name=u.name,
        role=u.role,
        team=u.team_id,
        disabled=u.disabled,
        source=u.source,
        has_password=u.password_hash is not None,
    )


def _check_user_refs(s: AppState, role: str | None, team: str | None) -> None:
    if role is not None and role not in ROLES:
        raise _invalid("role", f"unknown role {role!r}: one of {', '.join(ROLES)}")
    if team is not None and s.db.get_team(team) is None:
        raise _invalid("team", f"unknown team {team!r}")


def _last_admin(s: AppState, user: UserRecord) -> bool:
    return (
        user.role == "admin"
        and not user.disabled
        and user.password_hash is not None
        and s.db.count_admins() <= 1
    )


@router.get("/users", response_model=list[UserOut])
def list_users(s: State, who: Admin) -> list[UserOut]:
    return [_user_out(u) for u in s.db.list_users()]


@router.post("/users", response_model=UserOut, status_code=201)
def create_user(body: UserIn, s: State, who: Admin, auth: AuthDep) -> UserOut:
    _check_user_refs(s, body.role, body.team)
    try:
        password_hash = auth.hash_new_password(body.password, body.id)
    except WeakPassword as exc:
        raise _invalid("password", str(exc)) from None
    user = UserRecord(body.id, body.name, body.role, body.team, password_hash, source="api")  # type: ignore[arg-type]
    try:
        s.db.create_user(user)
    except ValueError as exc:
        raise _conflict(str(exc)) from None
    _audit(s, who.user_id, "user.create", f"user:{body.id}", {"role": body.role, "team": body.team})
    created = s.db.get_user(body.id)
    assert created is not None
    return _user_out(created)


@router.patch("/users/{user_id}", response_model=UserOut)
def update_user(user_id: str, body: UserPatch, s: State, who: Admin, auth: AuthDep) -> UserOut:
    user = s.db.get_user(user_id) if len(user_id) <= 128 else None
    if user is None:
        raise _missing("user")
    changes = body.model_dump(exclude_unset=True)
    profile = {k: changes[k] for k in ("name", "role", "team") if k in changes}
    if profile:
        _api_only(user.source, f"user {user_id!r}")
        for key in ("name", "role"):
            if key in profile and profile[key] is None:
                raise _invalid(key, "may not be null")
        _check_user_refs(s, profile.get("role"), profile.get("team"))
        if profile.get("role", "admin") != "admin" and _last_admin(s, user):
            raise _conflict("the last admin who can log in keeps the admin role")
        s.db.update_user(user_id, **{("team_id" if k == "team" else k): v for k, v in profile.items()})
    if changes.get("password") is not None:
        try:
            auth.set_password(user_id, changes["password"])
        except WeakPassword as exc:
            raise _invalid("password", str(exc)) from None
    if changes.get("disabled") is not None:
        _set_disabled(s, user, changes["disabled"], who.user_id)
    _audit(s, who.user_id, "user.update", f"user:{user_id}", {"fields": sorted(changes)})
    updated = s.db.get_user(user_id)
    assert updated is not None
    return _user_out(updated)


@router.delete("/users/{user_id}", status_code=204)
def delete_user(user_id: str, s: State, who: Admin) -> Response:
    """Disable the user and end its sessions; its API tokens stop working; the row stays (audit trail)."""
    user = s.db.get_user(user_id) if len(user_id) <= 128 else None
    if user is None:
        raise _missing("user")
    _set_disabled(s, user, True, who.user_id)
    _audit(s, who.user_id, "user.delete", f"user:{user_id}")
    return Response(status_code=204)


def _set_disabled(s: AppState, user: UserRecord, disabled: bool, actor: str) -> None:
    if disabled and user.id == actor:
        raise _conflict("you cannot disable yourself")
    if disabled and _last_admin(s, user):
        raise _conflict("the last admin who can log in cannot be disabled")
    s.db.set_user_disabled(user.id, disabled)
    if disabled:
        s.db.delete_sessions_of_user(user.id)
