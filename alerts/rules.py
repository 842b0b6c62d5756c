"""Alert rules over tracked objects: labels, score, size, required zones, dwell time, cooldown.

An object (a track) raises at most one alert per rule; a camera raises at most one alert per label per
cooldown; objects that have stood still (parked cars, signs) never raise one, nor (with `moving_only`) objects
that have not travelled since they were first seen (a car parked there when the camera started). Scores and
sizes can be set per label in a rule and per camera and label (`LabelThreshold`); the stricter bar wins.
`window` turns `min_hits` into "k of the last n detector runs" (fire and smoke confirmation); once an object
has alerted, its event lasts while its track does, which the tracker keeps alive on weaker detections
(hysteresis).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from alerts.schedule import Schedule
from detect.tracker import Track
from detect.zones import Zone

STAY_IN_PLACE = frozenset({"fire", "smoke"})  # labels that do not travel
SEVERITIES = ("low", "normal", "high", "critical")  # in rising order


def default_severity(labels: Iterable[str]) -> str:
    """Fire and smoke are critical (a fire must be reached within fifteen minutes), anything else normal."""
    return "critical" if set(labels) & STAY_IN_PLACE else "normal"


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    labels: frozenset[str]
    min_score: float
    cooldown_s: float
    cameras: frozenset[str] | None = None  # None: every camera
    zones: frozenset[str] | None = None  # the object must stand in one of these zones; None: anywhere
    min_area: float = 0.0  # box area as a fraction of the frame
    dwell_s: float = 0.0  # in the zone (or, without zones, in view) at least this long
    min_hits: int = 2  # frames the object was detected in before it can alert
    min_flicker: float = 0.0  # fire confirmation: the box content must keep changing (see detect.flicker)
    min_growth: float = 0.0  # or (when set) the box has grown this many times since first seen (spreading)
    # Only objects that travelled since first seen; None: yes, unless the rule is for fire or smoke (which
    # flicker in place; `min_flicker` confirms them instead).
    moving_only: bool | None = None
    window: int = 0  # k of n: min_hits detections within the camera's last `window` detector runs; 0: ever
    label_min_score: Mapping[str, float] = field(default_factory=dict)  # per label, instead of min_score
    label_min_area: Mapping[str, float] = field(default_factory=dict)  # per label, instead of min_area
    severity: str = ""  # one of SEVERITIES; "": default_severity(labels)
    villages: frozenset[str] | None = None  # None: every village
    grids: frozenset[str] | None = None  # None: every grid
    schedules: tuple[Schedule, ...] = ()  # armed while any of them is active; (): always

    def applies_to(self, camera_id: str, village: str = "", grid: str = "") -> bool:
        """Whether the rule covers this camera: every scope given (cameras, villages, grids) must match."""
        return (
            (self.cameras is None or camera_id in self.cameras)
            and (self.villages is None or village in self.villages)
            and (self.grids is None or grid in self.grids)
        )

    def armed(self, wall_time: float) -> bool:
        return not self.schedules or any(s.active(wall_time) for s in self.schedules)

    @property
    def effective_severity(self) -> str:
        return self.severity or default_severity(self.labels)

    @property
    def needs_travel(self) -> bool:
        if self.moving_only is not None:
            return self.moving_only
        return not (self.labels & STAY_IN_PLACE)

    def score_for(self, label: str) -> float:
        return self.label_min_score.get(label, self.min_score)

    def area_for(self, label: str) -> float:
        return self.label_min_area.get(label, self.min_area)


@dataclass(frozen=True, slots=True)
class LabelThreshold:
    """A camera's own bar for one label (a camera facing a busy road may want cars only when large)."""

    min_score: float = 0.0
    min_area: float = 0.0


@dataclass(frozen=True, slots=True)
class Trigger:
    """One tracked object that a rule turned into an alert."""

    rule: str
    camera_id: str
    label: str
    score: float
    bbox: tuple[float, float, float, float]
    track_id: int
    zone: str | None = None
    severity: str = "normal"


class RuleEngine:
    """Evaluates the tracks of a frame against the rules; thread-safe; clock: the caller's `now` (seconds)."""

    def __init__(
        self,
        rules: Iterable[Rule],
        camera_thresholds: Mapping[str, Mapping[str, LabelThreshold]] | None = None,
        places: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        self.rules = tuple(rules)
        self.camera_thresholds = camera_thresholds or {}
        self.places = places or {}  # camera id -> (village, grid), for rules scoped to villages or grids
        self._window = max((r.window for r in self.rules), default=0)
        self._seen: dict[tuple[str, int], deque[bool]] = {}  # (camera, track id) -> detected per run
        self._last: dict[tuple[str, str], float] = {}
        self._fired: set[tuple[str, int, str]] = set()  # (camera, track id, rule)
        self._entered: dict[
            tuple[str, int, str], float
        ] = {}  # (camera, track id, zone or "") -> first time in
        self._lock = threading.Lock()

    def replace_rules(self, rules: Iterable[Rule]) -> None:
        """Swap in edited rules (from the API) without losing what the engine knows about live tracks."""
        new = tuple(rules)
        with self._lock:
            self.rules = new
            self._window = max(self._window, max((r.window for r in new), default=0))

    def evaluate(
        self,
        camera_id: str,
        tracks: list[Track],
        frame_size: tuple[int, int],
        now: float,
        zones: Mapping[str, Zone] | None = None,
        flicker: Mapping[int, float] | None = None,
    ) -> list[Trigger]:
        width, height = frame_size
        zones = zones or {}
        flicker = flicker or {}
        triggers: list[Trigger] = []
        with self._lock:
            live = {t.id for t in tracks}
            self._forget(camera_id, live)
            self._remember_hits(camera_id, tracks, now)
            where = {t.id: self._zones_of(camera_id, t, zones, width, height, now) for t in tracks}
            village, grid = self.places.get(camera_id, ("", ""))
            for rule in self.rules:
                if not rule.applies_to(camera_id, village, grid) or not rule.armed(now):
                    continue
                candidates: list[tuple[Track, str]] = []
                for track in tracks:
                    zone = self._qualifies(rule, camera_id, track, where[track.id], width, height, now)
                    if zone is not None and not _has_fire_cue(rule, track, flicker.get(track.id, 0.0)):
                        zone = None
                    if zone is not None:
                        candidates.append((track, zone))
                for track, zone in sorted(candidates, key=lambda c: -c[0].score):
                    key = (camera_id, track.label)
                    last = self._last.get(key)
                    if last is not None and now - last < rule.cooldown_s:
                        continue
                    self._last[key] = now
                    self._fired.add((camera_id, track.id, rule.name))
                    triggers.append(
                        Trigger(
                            rule.name,
                            camera_id,
                            track.label,
                            track.score,
                            track.box,
                            track.id,
                            zone or None,
                            rule.effective_severity,
                        )
                    )
        return triggers

    def _qualifies(
        self,
        rule: Rule,
        camera_id: str,
        track: Track,
        inside: dict[str, float],
        width: int,
        height: int,
        now: float,
    ) -> str | None:
        """None, or the zone name ("" without zones) that lets this track raise this rule's alert."""
        if track.label not in rule.labels:
            return None
        own = self.camera_thresholds.get(camera_id, {}).get(track.label, LabelThreshold())
        if track.score < max(rule.score_for(track.label), own.min_score):
            return None
        if self._hits(rule, camera_id, track) < rule.min_hits:
            return None
        if track.stationary or (rule.needs_travel and not track.moved):
            return None
        if (camera_id, track.id, rule.name) in self._fired:
            return None
        x0, y0, x1, y1 = track.box
        min_area = max(rule.area_for(track.label), own.min_area)
        if min_area and (x1 - x0) * (y1 - y0) < min_area * width * height:
            return None
        names = sorted(rule.zones) if rule.zones is not None else [""]
        for name in names:
            entered = inside.get(name)
            if entered is not None and now - entered >= rule.dwell_s:
                return name
        return None

    def _zones_of(
        self, camera_id: str, track: Track, zones: Mapping[str, Zone], width: int, height: int, now: float
    ) -> dict[str, float]:
        """Zone name -> when this track entered it ("" is the whole view); leaving a zone resets its time."""
        inside: dict[str, float] = {}
        for name in ["", *zones]:
            key = (camera_id, track.id, name)
            if name == "" or zones[name].contains_box(track.box, width, height):
                inside[name] = self._entered.setdefault(key, track.first_seen if name == "" else now)
            else:
                self._entered.pop(key, None)
        return inside

    def _remember_hits(self, camera_id: str, tracks: list[Track], now: float) -> None:
        if not self._window:
            return
        for track in tracks:
            seen = self._seen.setdefault((camera_id, track.id), deque(maxlen=self._window))
            seen.append(track.last_seen == now)

    def _hits(self, rule: Rule, camera_id: str, track: Track) -> int:
        if not rule.window:
            return track.hits
        seen = list(self._seen.get((camera_id, track.id), ()))
        return sum(seen[-rule.window :])

    def _forget(self, camera_id: str, live: set[int]) -> None:
        for seen_key in [k for k in self._seen if k[0] == camera_id and k[1] not in live]:
            del self._seen[seen_key]
        for key in [k for k in self._entered if k[0] == camera_id and k[1] not in live]:
            del self._entered[key]
        for key in [k for k in self._fired if k[0] == camera_id and k[1] not in live]:
            self._fired.discard(key)


def _has_fire_cue(rule: Rule, track: Track, flicker: float) -> bool:
    """Flicker at least `min_flicker`, or growth at least `min_growth` where that is set."""
    if flicker >= rule.min_flicker:
        return True
    return bool(rule.min_growth) and track.growth >= rule.min_growth
