"""Config sections for who gets alerts: schedules, teams and rosters, routing, escalation, incidents."""

from __future__ import annotations

from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from alerts.incidents import DEFAULT_GROUP_WINDOWS, DEFAULT_GROUPS
from alerts.schedule import parse_clock

Id = Field(..., pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
DayName = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun", "holiday"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimeWindowSettings(_Section):
    days: list[DayName] | None = Field(
        None, description="Days the window starts on (mon..sun, holiday); empty: every day"
    )
    start: str = Field(..., description="Start time HH:MM, local time")
    end: str = Field(..., description="End time HH:MM (24:00 for midnight); at or before start: next day")

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        parse_clock(value)
        return value


class ScheduleSettings(_Section):
    name: str = Id
    windows: list[TimeWindowSettings] = Field(..., min_length=1, description="Armed while any window covers")


class ShiftSettings(_Section):
    user: str = Field(..., min_length=1, description="User id of a member of the team")
    schedule: str = Field(..., description="Name of a schedule: when this member is on duty")


class TeamSettings(_Section):
    id: str = Id
    name: str = Field(..., min_length=1, description="Display name")
    members: list[str] = Field(default_factory=list, description="User ids (their phones get Web Push)")
    roster: list[ShiftSettings] = Field(
        default_factory=list, description="Who is on duty when; empty: every member, always"
    )
    fallback: str | None = Field(
        None, description="Team that gets this team's alerts when nobody is on duty, and its escalations"
    )


class UserSettings(_Section):
    id: str = Id
    name: str = Field(..., min_length=1, description="Display name")
    role: Literal["admin", "operator", "patrol"] = Field("patrol", description="What the user may do")
    team: str | None = Field(None, description="Team id (patrol members)")


class RoutingSettings(_Section):
    fallback_team: str | None = Field(
        None, description="County-wide fallback: grids without a team, teams without one of their own"
    )
    monitoring_centre: str | None = Field(
        None, description="Team of the monitoring centre: it hears of every escalation"
    )
    escalate_after_s: float = Field(
        300.0, gt=0, description="Escalate an incident nobody acknowledged within this many seconds"
    )
    escalate_check_s: float = Field(5.0, gt=0, le=60, description="How often the dispatcher looks")
    reclaim_idle_s: float = Field(
        120.0,
        ge=1,
        description="A dispatcher takes over alert entries another one left unacknowledged this long "
        "(longer than the longest delivery with its retries)",
    )


class IncidentSettings(_Section):
    window_s: float = Field(
        300.0, ge=0, description="An alert joins its grid's open incident of the same kind this recent"
    )
    groups: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_GROUPS.items()},
        description="Labels that are the same kind of incident (fire and smoke are one fire)",
    )
    group_windows: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_GROUP_WINDOWS),
        description="Per group, instead of window_s (a fire stays one incident for 30 min)",
    )


def check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (an IANA name such as Asia/Shanghai)") from None
    return value
