"""Settings -> the alert side's parts: rules with their schedules (and the API's edits), the router, the
incident policy."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence

from alerts.incidents import IncidentPolicy
from alerts.routing import Route, Router, Shift, Team
from alerts.rules import Rule, RuleEngine
from alerts.schedule import Schedule, TimeWindow, all_week, parse_clock
from gridwatch.settings import RuleSettings, Settings
from storage.metadata import (
    GridRecord,
    MetadataDB,
    RosterEntry,
    RuleOverrideRecord,
    TeamRecord,
    UserRecord,
    VillageRecord,
)

log = logging.getLogger(__name__)


def build_schedules(s: Settings) -> dict[str, Schedule]:
    holidays = frozenset(s.holidays)
    return {
        x.name: Schedule(
            name=x.name,
            windows=tuple(
                TimeWindow(all_week(w.days), parse_clock(w.start), parse_clock(w.end)) for w in x.windows
            ),
            timezone=s.timezone,
            holidays=holidays,
        )
        for x in s.schedules
    }


def build_rule(r: RuleSettings, schedules: Mapping[str, Schedule] | None = None) -> Rule:
    """A configured rule as the rule engine takes it (schedules by name; unknown names are config errors)."""
    schedules = schedules or {}
    return Rule(
        name=r.name,
        labels=frozenset(r.labels),
        min_score=r.min_score,
        cooldown_s=r.cooldown_s,
        cameras=frozenset(r.cameras) if r.cameras else None,
        zones=frozenset(r.zones) if r.zones else None,
        min_area=r.min_area,
        dwell_s=r.dwell_s,
        min_hits=r.min_hits,
        min_flicker=r.min_flicker,
        min_growth=r.min_growth,
        window=r.window,
        moving_only=r.moving_only,
        label_min_score=dict(r.label_min_score),
        label_min_area=dict(r.label_min_area),
        severity=r.severity or "",
        villages=frozenset(r.villages) if r.villages else None,
        grids=frozenset(r.grids) if r.grids else None,
        schedules=tuple(schedules[name] for name in r.schedules or ()),
    )


def build_rules(s: Settings, rules: list[RuleSettings] | None = None) -> list[Rule]:
    """The enabled rules (the config's, or `rules`: the config's merged with the API's edits)."""
    schedules = build_schedules(s)
    return [build_rule(r, schedules) for r in (s.rules if rules is None else rules) if r.enabled]


def build_router(s: Settings) -> Router:
    schedules = build_schedules(s)
    members: dict[str, list[str]] = {t.id: list(t.members) for t in s.teams}
    for user in s.users:  # a user's `team` makes them a member too
        if user.team is not None and user.id not in members[user.team]:
            members[user.team].append(user.id)
    teams = [
        Team(
            id=t.id,
            name=t.name,
            members=tuple(members[t.id]),
            roster=tuple(Shift(x.user, schedules[x.schedule]) for x in t.roster),
            fallback=t.fallback,
        )
        for t in s.teams
    ]
    return Router(
        teams,
        grid_teams={g.id: g.team for g in s.grids},
        fallback_team=s.routing.fallback_team,
        monitoring_centre=s.routing.monitoring_centre,
    )


def build_router_from_db(s: Settings, db: MetadataDB) -> Router:
    """The router of the organisation as the database has it: the config's teams (with their members,
    rosters and fallbacks) and those an admin made through the API, every grid's team, the users' teams."""
    schedules = build_schedules(s)
    configured = {t.id: t for t in s.teams}
    members: dict[str, list[str]] = {t.id: list(t.members) for t in s.teams}
    for user in db.list_users():
        if (
            user.team_id is not None
            and not user.disabled
            and user.id not in members.setdefault(user.team_id, [])
        ):
            members[user.team_id].append(user.id)
    teams = []
    for record in db.list_teams():
        config = configured.get(record.id)
        shifts = []
        for shift in config.roster if config is not None else record.roster:
            if shift.schedule in schedules:
                shifts.append(Shift(shift.user, schedules[shift.schedule]))
            else:
                log.warning("team %s: roster names unknown schedule %r, left out", record.id, shift.schedule)
        teams.append(
            Team(
                id=record.id,
                name=record.name,
                members=tuple(members.get(record.id, ())),
                roster=tuple(shifts),
                fallback=config.fallback if config is not None else None,
            )
        )
    return Router(
        teams,
        grid_teams={g.id: g.team_id for g in db.list_grids()},
        fallback_team=s.routing.fallback_team,
        monitoring_centre=s.routing.monitoring_centre,
    )


class LiveRouter(Router):
    """A router that follows the organisation in the database (grids, teams, rosters made or changed through
    the API): rebuilt when it is older than `every_s` at the next question. A rebuild that fails keeps the
    last good one."""

    def __init__(self, s: Settings, db: MetadataDB, every_s: float = 10.0) -> None:
        self.settings, self.db, self.every_s = s, db, every_s
        self._lock = threading.Lock()
        self._built_at = 0.0
        self._adopt(build_router_from_db(s, db))

    def _adopt(self, router: Router) -> None:
        self.teams, self.grid_teams = router.teams, router.grid_teams
        self.fallback_team, self.monitoring_centre = router.fallback_team, router.monitoring_centre
        self._built_at = time.monotonic()

    def refresh(self, *, force: bool = False) -> None:
        with self._lock:
            if not force and time.monotonic() - self._built_at < self.every_s:
                return
            try:
                self._adopt(build_router_from_db(self.settings, self.db))
            except Exception:
                self._built_at = time.monotonic()  # try again in every_s, not at every question
                log.exception("could not rebuild the routing from the database; keeping the last one")

    def route(self, grid: str, wall_time: float) -> Route:
        self.refresh()
        return super().route(grid, wall_time)

    def escalation_teams(self, team_id: str | None) -> tuple[str, ...]:
        self.refresh()
        return super().escalation_teams(team_id)

    def members_on_duty(self, team_id: str, wall_time: float) -> tuple[str, ...]:
        self.refresh()
        return super().members_on_duty(team_id, wall_time)


def build_incident_policy(s: Settings) -> IncidentPolicy:
    return IncidentPolicy(
        window_s=s.incidents.window_s,
        groups={group: tuple(labels) for group, labels in s.incidents.groups.items()},
        group_windows=dict(s.incidents.group_windows),
    )


def merged_rules(s: Settings, overrides: Sequence[RuleOverrideRecord]) -> list[RuleSettings]:
    """The config's rules with the API's edits: an edit replaces the YAML rule of its name (`enabled:
    false` turns one off), other edits are new rules. An edit that no longer validates against the config
    (it names a camera since removed) is left out, with a warning."""
    by_name = {r.name: r for r in s.rules}
    for o in overrides:
        try:
            rule = RuleSettings.model_validate({**o.body, "name": o.name})
        except ValueError as exc:
            log.warning("rule %r edited through the API is not valid any more, left out: %s", o.name, exc)
            continue
        problems = s.rule_problems([rule])
        if problems:
            log.warning("rule %r edited through the API is left out: %s", o.name, "; ".join(problems))
            continue
        by_name[o.name] = rule
    return list(by_name.values())


class RuleWatcher(threading.Thread):
    """Keeps a worker's rule engine in step with rules edited through the API (polls the database)."""

    def __init__(self, s: Settings, db: MetadataDB, engine: RuleEngine, every_s: float = 10.0) -> None:
        super().__init__(name="rule-watcher", daemon=True)
        self.settings, self.db, self.engine, self.every_s = s, db, engine, every_s
        self.stopping = threading.Event()
        self.reloads = 0
        self._last: list[dict[str, object]] | None = None

    def check(self) -> bool:
        """Apply the current rules if they changed; whether they did."""
        rules = merged_rules(self.settings, self.db.list_rule_overrides())
        dumped = [r.model_dump(mode="json") for r in rules]
        if dumped == self._last:
            return False
        first = self._last is None
        self._last = dumped
        if first and not self.db.list_rule_overrides():
            return False  # the engine was built from these very rules
        self.engine.replace_rules(build_rules(self.settings, rules))
        self.reloads += 1
        log.info("rules reloaded: %s", ", ".join(r.name for r in rules if r.enabled) or "none enabled")
        return True

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.check()
            except Exception:
                log.exception("could not reload rules; keeping the current ones")
            self.stopping.wait(self.every_s)

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(5)


def sync_organisation(s: Settings, db: MetadataDB) -> None:
    """Write the config's villages, teams, grids and users to the database (the API and the audit log refer
    to them). Users keep what the database knows and the config does not say (their password hash)."""
    db.upsert_villages([VillageRecord(v.id, v.name) for v in s.villages])
    db.upsert_teams(
        [
            TeamRecord(t.id, t.name, roster=tuple(RosterEntry(x.user, x.schedule) for x in t.roster))
            for t in s.teams
        ]
    )
    db.upsert_grids([GridRecord(g.id, g.name, g.village, g.team) for g in s.grids])
    users = []
    for u in s.users:
        known = db.get_user(u.id)
        users.append(
            UserRecord(
                id=u.id,
                name=u.name,
                role=u.role,
                team_id=u.team,
                password_hash=known.password_hash if known else None,
            )
        )
    db.upsert_users(users)
