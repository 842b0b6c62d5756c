"""When a rule is armed: weekly time windows (nights), holidays, in the county's time zone.

A window names the days it starts on and a start and end time; an end at or before the start runs past
midnight into the next day (19:00-06:00 on Friday covers Friday evening and Saturday morning). The day
"holiday" matches the dates listed as holidays, whatever their weekday; a holiday also keeps its weekday.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HOLIDAY = "holiday"
DAY_NAMES = frozenset((*DAYS, HOLIDAY))


@dataclass(frozen=True, slots=True)
class TimeWindow:
    days: frozenset[str]  # names from DAYS, or "holiday"
    start: time
    end: time  # at or before `start`: the window ends on the next day

    @property
    def overnight(self) -> bool:
        return self.end <= self.start

    def covers(self, at: datetime, holidays: frozenset[date]) -> bool:
        """Whether local time `at` falls in this window (started on `at`'s day, or the day before)."""
        clock = at.time().replace(tzinfo=None)
        today, yesterday = at.date(), at.date() - timedelta(days=1)
        if self.overnight:
            return (self._starts_on(today, holidays) and clock >= self.start) or (
                self._starts_on(yesterday, holidays) and clock < self.end
            )
        return self._starts_on(today, holidays) and self.start <= clock < self.end

    def _starts_on(self, day: date, holidays: frozenset[date]) -> bool:
        return DAYS[day.weekday()] in self.days or (HOLIDAY in self.days and day in holidays)


@dataclass(frozen=True, slots=True)
class Schedule:
    """Armed while any window covers the local time."""

    name: str
    windows: tuple[TimeWindow, ...]
    timezone: str = "UTC"
    holidays: frozenset[date] = frozenset()

    def active(self, wall_time: float) -> bool:
        """`wall_time`: seconds since the epoch (time.time(), a frame's captured_at)."""
        local = datetime.fromtimestamp(wall_time, ZoneInfo(self.timezone))
        return any(w.covers(local, self.holidays) for w in self.windows)


def parse_clock(text: str) -> time:
    """ "HH:MM" (or "24:00", the end of the day) as a time; a clear ValueError otherwise."""
    try:
        hours, minutes = (int(part) for part in text.split(":"))
    except ValueError:
        raise ValueError(f"{text!r} is not a time of day as HH:MM") from None
    if (hours, minutes) == (24, 0):
        return time(0, 0)  # as an end, midnight: the window runs to the end of its day
    if not (0 <= hours < 24 and 0 <= minutes < 60):
        raise ValueError(f"{text!r} is not a time of day as HH:MM (00:00 to 24:00)")
    return time(hours, minutes)


def all_week(days: Iterable[str] | None) -> frozenset[str]:
    """The days named, every day of the week when none are."""
    return frozenset(days) if days else frozenset(DAYS)
