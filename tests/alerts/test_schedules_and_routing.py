"""Schedules (nights, holidays), rule scope and severity, routing to teams and rosters, the lifecycle."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from alerts.lifecycle import TransitionError, next_status
from alerts.routing import Router, Shift, Team
from alerts.rules import Rule, RuleEngine
from alerts.schedule import DAYS, Schedule, TimeWindow, parse_clock
from detect.tracker import Track

SHANGHAI = ZoneInfo("Asia/Shanghai")
NIGHTS = Schedule("nights", (TimeWindow(frozenset(DAYS), time(19, 0), time(6, 0)),), timezone="Asia/Shanghai")
HOLIDAYS = Schedule(
    "holidays",
    (TimeWindow(frozenset({"holiday"}), time(0, 0), parse_clock("24:00")),),
    timezone="Asia/Shanghai",
    holidays=frozenset({date(2026, 10, 1)}),
)


def at(*args: int) -> float:
    return datetime(*args, tzinfo=SHANGHAI).timestamp()


def test_an_overnight_window_covers_the_evening_and_the_next_morning() -> None:
    assert NIGHTS.active(at(2026, 12, 1, 19, 0))
    assert NIGHTS.active(at(2026, 12, 1, 23, 59))
    assert NIGHTS.active(at(2026, 12, 2, 5, 59))
    assert not NIGHTS.active(at(2026, 12, 2, 6, 0))
    assert not NIGHTS.active(at(2026, 12, 2, 12, 0))
    assert not NIGHTS.active(at(2026, 12, 2, 18, 59))


def test_an_overnight_window_belongs_to_the_day_it_starts() -> None:
    friday_night = Schedule(
        "fri", (TimeWindow(frozenset({"fri"}), time(22, 0), time(2, 0)),), timezone="Asia/Shanghai"
    )
    assert friday_night.active(at(2026, 12, 4, 23, 0))  # Friday
    assert friday_night.active(at(2026, 12, 5, 1, 0))  # Saturday morning: Friday's window
    assert not friday_night.active(at(2026, 12, 5, 23, 0))  # Saturday night
    assert not friday_night.active(at(2026, 12, 4, 1, 0))  # Friday morning: Thursday's


def test_holidays_are_whole_days_in_the_local_time_zone() -> None:
    assert HOLIDAYS.active(at(2026, 10, 1, 0, 0))
    assert HOLIDAYS.active(at(2026, 10, 1, 23, 59))
    assert not HOLIDAYS.active(at(2026, 10, 2, 0, 0))
    assert not HOLIDAYS.active(at(2026, 9, 30, 23, 59))


def test_clock_parsing_names_the_bad_value() -> None:
    assert parse_clock("07:30") == time(7, 30)
    with pytest.raises(ValueError, match="25:00"):
        parse_clock("25:00")
    with pytest.raises(ValueError, match="seven"):
        parse_clock("seven")


def _person(now: float) -> Track:
    return Track(1, "person", (10, 10, 60, 120), 0.9, now - 5, now, hits=5, stationary=False, moved=True)


def test_a_rule_with_a_schedule_raises_only_while_armed() -> None:
    engine = RuleEngine([Rule("night-people", frozenset({"person"}), 0.5, 0.0, schedules=(NIGHTS,))])
    day = at(2026, 12, 2, 12, 0)
    assert engine.evaluate("cam", [_person(day)], (640, 480), now=day) == []
    night = at(2026, 12, 2, 21, 0)
    triggers = engine.evaluate("cam", [_person(night)], (640, 480), now=night)
    assert [t.rule for t in triggers] == ["night-people"]


def test_rules_scoped_to_villages_and_grids_and_their_severity() -> None:
    rules = [
        Rule("east-people", frozenset({"person"}), 0.5, 0.0, grids=frozenset({"east-1"}), severity="high"),
        Rule("fire", frozenset({"fire"}), 0.5, 0.0, villages=frozenset({"xicun"})),
    ]
    places = {"gate": ("dongshan", "east-1"), "barn": ("xicun", "xicun-1")}
    engine = RuleEngine(rules, places=places)
    now = 1_000_000.0
    assert [(t.rule, t.severity) for t in engine.evaluate("gate", [_person(now)], (640, 480), now)] == [
        ("east-people", "high")
    ]
    assert engine.evaluate("barn", [_person(now)], (640, 480), now) == []
    flames = Track(2, "fire", (10, 10, 60, 120), 0.9, now - 5, now, hits=5, stationary=False, moved=False)
    fired = engine.evaluate("barn", [flames], (640, 480), now)
    assert [(t.rule, t.severity) for t in fired] == [("fire", "critical")]  # fire: critical by default


def test_replacing_rules_keeps_the_engine_working() -> None:
    engine = RuleEngine([Rule("people", frozenset({"person"}), 0.95, 0.0)])
    now = 1_000_000.0
    assert engine.evaluate("cam", [_person(now)], (640, 480), now) == []  # 0.9 < 0.95
    engine.replace_rules([Rule("people", frozenset({"person"}), 0.5, 0.0)])
    assert len(engine.evaluate("cam", [_person(now + 1)], (640, 480), now + 1)) == 1


ROSTER_DAY = Schedule("day", (TimeWindow(frozenset(DAYS), time(8, 0), time(20, 0)),), "Asia/Shanghai")


def _router() -> Router:
    teams = [
        Team("east", "East patrol", ("li", "wang"), (Shift("li", ROSTER_DAY), Shift("wang", NIGHTS))),
        Team("west", "West patrol", ("zhao",), fallback="joint"),
        Team("joint", "Rural joint emergency team", ("chen",)),
        Team("centre", "Monitoring centre", ("op1",)),
    ]
    return Router(
        teams,
        {"east-1": "east", "west-1": "west", "north-1": None},
        fallback_team="joint",
        monitoring_centre="centre",
    )


def test_routing_follows_the_roster() -> None:
    router = _router()
    assert router.route("east-1", at(2026, 12, 2, 10, 0)).on_duty == ("li",)
    night = router.route("east-1", at(2026, 12, 2, 23, 0))
    assert (night.team, night.on_duty) == ("east", ("wang",))


def test_a_grid_without_a_team_goes_to_the_fallback_team() -> None:
    route = _router().route("north-1", at(2026, 12, 2, 10, 0))
    assert (route.team, route.on_duty) == ("joint", ("chen",))
    assert "no team" in route.reason


def test_a_team_with_nobody_on_duty_falls_back() -> None:
    teams = [
        Team("east", "East", ("li",), (Shift("li", ROSTER_DAY),)),
        Team("joint", "Joint", ("chen",)),
    ]
    router = Router(teams, {"east-1": "east"}, fallback_team="joint")
    route = router.route("east-1", at(2026, 12, 2, 23, 0))
    assert (route.team, route.on_duty) == ("joint", ("chen",))
    assert "nobody" in route.reason


def test_escalation_goes_to_the_fallback_team_and_the_monitoring_centre() -> None:
    router = _router()
    assert router.escalation_teams("east") == ("joint", "centre")
    assert router.escalation_teams("west") == ("joint", "centre")  # its own fallback is joint too
    assert router.escalation_teams("joint") == ("centre",)  # not to itself


def test_routing_refuses_unknown_teams() -> None:
    with pytest.raises(ValueError, match="ghost"):
        Router([Team("east", "East")], {"east-1": "ghost"})


@pytest.mark.parametrize(
    ("current", "action", "expected"),
    [
        ("new", "acknowledge", "acknowledged"),
        ("new", "on_scene", "on_scene"),  # may skip ahead
        ("acknowledged", "dispatch", "dispatched"),
        ("dispatched", "on_scene", "on_scene"),
        ("on_scene", "resolve", "resolved"),
        ("new", "false_alarm", "false_alarm"),
        ("on_scene", "false_alarm", "false_alarm"),
    ],
)
def test_lifecycle_steps(current: str, action: str, expected: str) -> None:
    assert next_status(current, action) == expected


@pytest.mark.parametrize(
    ("current", "action", "why"),
    [
        ("acknowledged", "acknowledge", "go back"),
        ("on_scene", "dispatch", "go back"),
        ("resolved", "acknowledge", "already resolved"),
        ("false_alarm", "resolve", "already false_alarm"),
        ("new", "explode", "unknown action"),
    ],
)
def test_lifecycle_refuses_illegal_steps(current: str, action: str, why: str) -> None:
    with pytest.raises(TransitionError, match=why):
        next_status(current, action)
