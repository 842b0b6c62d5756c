from __future__ import annotations

from alerts.rules import LabelThreshold, Rule, RuleEngine
from detect.tracker import Track
from detect.zones import Zone

SIZE = (800, 600)


def _track(
    tid: int, label: str = "person", score: float = 0.9, box=(100.0, 100.0, 160.0, 200.0), **kw
) -> Track:  # type: ignore[no-untyped-def]
    fields = {"first_seen": 0.0, "last_seen": 0.0, "hits": 3, "stationary": False} | kw
    return Track(tid, label, box, score, **fields)


def _rule(**kw) -> Rule:  # type: ignore[no-untyped-def]
    fields = {"name": "people", "labels": frozenset({"person"}), "min_score": 0.5, "cooldown_s": 0.0} | kw
    return Rule(**fields)


def test_one_alert_per_object_and_per_cooldown() -> None:
    engine = RuleEngine([_rule(cooldown_s=30)])
    first = engine.evaluate("cam1", [_track(1, score=0.6), _track(2, score=0.9)], SIZE, now=100.0)
    assert [(t.track_id, round(t.score, 2)) for t in first] == [(2, 0.9)]
    assert engine.evaluate("cam1", [_track(2), _track(3)], SIZE, now=120.0) == []  # cooldown: camera, label
    assert len(engine.evaluate("cam2", [_track(1)], SIZE, now=120.0)) == 1
    assert [t.track_id for t in engine.evaluate("cam1", [_track(2), _track(3)], SIZE, now=131.0)] == [3]


def test_the_same_object_never_alerts_twice() -> None:
    engine = RuleEngine([_rule()])
    assert len(engine.evaluate("cam", [_track(7)], SIZE, now=0)) == 1
    assert engine.evaluate("cam", [_track(7)], SIZE, now=500) == []


def test_score_hits_label_camera_size_and_stationary_filters() -> None:
    engine = RuleEngine([_rule(cameras=frozenset({"barn"}), min_area=0.01)])
    assert engine.evaluate("barn", [_track(1, score=0.49)], SIZE, now=0) == []
    assert engine.evaluate("barn", [_track(2, hits=1)], SIZE, now=0) == []  # not yet confirmed
    assert engine.evaluate("barn", [_track(3, label="car")], SIZE, now=0) == []
    assert engine.evaluate("gate", [_track(4)], SIZE, now=0) == []
    assert engine.evaluate("barn", [_track(5, box=(0.0, 0.0, 20.0, 20.0))], SIZE, now=0) == []  # too small
    assert engine.evaluate("barn", [_track(6, stationary=True)], SIZE, now=0) == []  # parked, a sign...
    assert [t.track_id for t in engine.evaluate("barn", [_track(7)], SIZE, now=0)] == [7]


def test_required_zone_and_dwell_time() -> None:
    zones = {"gate": Zone("gate", ((0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.5, 1.0)))}
    engine = RuleEngine([_rule(zones=frozenset({"gate"}), dwell_s=10)])
    outside = (100.0, 100.0, 140.0, 200.0)
    inside = (600.0, 300.0, 640.0, 500.0)
    assert engine.evaluate("cam", [_track(1, box=outside)], SIZE, now=0, zones=zones) == []
    assert engine.evaluate("cam", [_track(1, box=inside)], SIZE, now=5, zones=zones) == []  # entered at 5
    assert engine.evaluate("cam", [_track(1, box=inside)], SIZE, now=14, zones=zones) == []
    [trigger] = engine.evaluate("cam", [_track(1, box=inside)], SIZE, now=15.5, zones=zones)
    assert trigger.zone == "gate"
    # leaving the zone resets the dwell clock
    engine2 = RuleEngine([_rule(zones=frozenset({"gate"}), dwell_s=10)])
    engine2.evaluate("cam", [_track(2, box=inside)], SIZE, now=0, zones=zones)
    engine2.evaluate("cam", [_track(2, box=outside)], SIZE, now=8, zones=zones)
    assert engine2.evaluate("cam", [_track(2, box=inside)], SIZE, now=12, zones=zones) == []
    assert len(engine2.evaluate("cam", [_track(2, box=inside)], SIZE, now=22, zones=zones)) == 1


def test_no_tracks() -> None:
    assert RuleEngine([_rule()]).evaluate("cam", [], SIZE, now=0) == []


def test_per_label_and_per_camera_thresholds() -> None:
    rule = _rule(
        labels=frozenset({"person", "car"}),
        label_min_score={"car": 0.8},
        label_min_area={"car": 0.05},
    )
    engine = RuleEngine([rule], camera_thresholds={"road": {"person": LabelThreshold(min_score=0.7)}})
    big_car = (0.0, 0.0, 400.0, 300.0)  # a quarter of the frame
    assert engine.evaluate("gate", [_track(1, "car", 0.7, big_car)], SIZE, now=0) == []  # car needs 0.8
    assert engine.evaluate("gate", [_track(2, "car", 0.85)], SIZE, now=0) == []  # and 5 % of the frame
    assert [t.track_id for t in engine.evaluate("gate", [_track(3, "car", 0.85, big_car)], SIZE, now=0)] == [
        3
    ]
    assert [t.track_id for t in engine.evaluate("gate", [_track(4, score=0.6)], SIZE, now=0)] == [4]
    assert engine.evaluate("road", [_track(5, score=0.6)], SIZE, now=0) == []  # the road camera wants 0.7
    assert [t.track_id for t in engine.evaluate("road", [_track(6, score=0.75)], SIZE, now=0)] == [6]


def test_k_of_n_confirmation_counts_recent_runs_only() -> None:
    """min_hits 3 within the last 4 runs: three sightings spread over many runs do not confirm."""
    engine = RuleEngine([_rule(labels=frozenset({"fire"}), min_hits=3, window=4)])

    def run(now: float, seen: bool) -> list[str]:
        track = _track(1, "fire", first_seen=0.0, last_seen=now if seen else now - 0.5, hits=99)
        return [t.label for t in engine.evaluate("barn", [track], SIZE, now=now)]

    pattern = [True, False, False, True, False, False, True, False]  # 1 of every 3 runs
    assert [label for i, seen in enumerate(pattern) for label in run(float(i), seen)] == []
    assert run(8.0, True) == [] and run(9.0, True) == ["fire"]  # runs 6..9: True, False, True, True


def test_an_object_that_never_moved_does_not_alert() -> None:
    engine = RuleEngine([_rule()])
    assert engine.evaluate("cam", [_track(1, moved=False)], SIZE, now=0) == []
    assert len(engine.evaluate("cam", [_track(1, moved=True)], SIZE, now=1)) == 1


def test_growth_confirms_smoke_that_does_not_flicker() -> None:
    """Smoke spreading slowly changes little between frames but its box grows."""
    rule = _rule(labels=frozenset({"smoke"}), min_flicker=4, min_growth=1.5)
    engine = RuleEngine([rule])
    assert engine.evaluate("cam", [_track(1, "smoke", growth=1.2)], SIZE, now=0, flicker={1: 0.5}) == []
    assert len(engine.evaluate("cam", [_track(2, "smoke", growth=1.6)], SIZE, now=1, flicker={2: 0.5})) == 1
    assert len(engine.evaluate("cam", [_track(3, "smoke", growth=1.0)], SIZE, now=2, flicker={3: 9.0})) == 1
    flicker_only = RuleEngine([_rule(labels=frozenset({"smoke"}), min_flicker=4)])
    assert flicker_only.evaluate("cam", [_track(4, "smoke", growth=9.0)], SIZE, now=0, flicker={4: 0.5}) == []
