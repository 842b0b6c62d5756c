"""Who gets an incident: camera -> village -> grid -> the grid's patrol team, its members on duty,
fallbacks.

A team without a roster has all its members on duty; with one, the members whose shifts cover the time. When
a grid has no team, or its team has nobody on duty, the incident goes straight to the fallback team (the
team's own, or the county's). Escalation (nobody acknowledged in time) goes to the fallback team and the
monitoring centre.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from alerts.schedule import Schedule


@dataclass(frozen=True, slots=True)
class Shift:
    user: str
    schedule: Schedule


@dataclass(frozen=True, slots=True)
class Team:
    id: str
    name: str
    members: tuple[str, ...] = ()
    roster: tuple[Shift, ...] = ()  # (): every member is on duty
    fallback: str | None = None  # this team's fallback; None: the county's

    def on_duty(self, wall_time: float) -> tuple[str, ...]:
        if not self.roster:
            return self.members
        return tuple(dict.fromkeys(s.user for s in self.roster if s.schedule.active(wall_time)))


@dataclass(frozen=True, slots=True)
class Route:
    grid: str
    team: str | None  # the team that gets the incident; None: nobody is configured at all
    on_duty: tuple[str, ...]  # its members on duty (push subscriptions are theirs)
    reason: str  # why this team: "grid team", or why it fell back


class Router:
    def __init__(
        self,
        teams: Iterable[Team],
        grid_teams: Mapping[str, str | None],
        fallback_team: str | None = None,
        monitoring_centre: str | None = None,
    ) -> None:
        self.teams = {t.id: t for t in teams}
        self.grid_teams = dict(grid_teams)
        self.fallback_team = fallback_team
        self.monitoring_centre = monitoring_centre
        for team_id in [*self.grid_teams.values(), fallback_team, monitoring_centre]:
            if team_id is not None and team_id not in self.teams:
                raise ValueError(f"routing names unknown team {team_id!r}")

    def route(self, grid: str, wall_time: float) -> Route:
        team_id = self.grid_teams.get(grid)
        if team_id is None:
            return self._fallback(grid, None, wall_time, f"grid {grid!r} has no team")
        team = self.teams[team_id]
        on_duty = team.on_duty(wall_time)
        if not on_duty and team.members:
            return self._fallback(grid, team, wall_time, f"nobody of team {team_id!r} is on duty")
        return Route(grid, team_id, on_duty, "grid team")

    def fallback_for(self, team_id: str | None) -> str | None:
        team = self.teams.get(team_id) if team_id else None
        fallback = team.fallback if team is not None and team.fallback else self.fallback_team
        return fallback if fallback != team_id else None

    def escalation_teams(self, team_id: str | None) -> tuple[str, ...]:
        """Who hears of an incident nobody acknowledged: the fallback team and the monitoring centre."""
        wanted = [self.fallback_for(team_id), self.monitoring_centre]
        return tuple(dict.fromkeys(t for t in wanted if t is not None and t != team_id))

    def members_on_duty(self, team_id: str, wall_time: float) -> tuple[str, ...]:
        team = self.teams.get(team_id)
        if team is None:
            return ()
        return team.on_duty(wall_time) or team.members

    def _fallback(self, grid: str, team: Team | None, wall_time: float, why: str) -> Route:
        fallback = self.fallback_for(team.id if team else None)
        if fallback is None:
            if team is not None:  # nobody to fall back to: the grid's team, all of it, rather than no one
                return Route(grid, team.id, team.members, f"{why}; no fallback team, all members")
            return Route(grid, None, (), f"{why}; no fallback team")
        return Route(grid, fallback, self.members_on_duty(fallback, wall_time), f"{why}; fallback team")
