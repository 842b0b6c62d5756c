"""Parked cars do not alert, people walking past them do: the real detector loop on vtest, offline."""

from __future__ import annotations

from pathlib import Path

import av

from alerts.evaluator import FrameEvaluator
from alerts.rules import Rule, RuleEngine
from detect.crops import CropPolicy
from detect.detections import Detections
from detect.loop import DetectorLoop
from detect.motion import MotionGate
from detect.nanodet import NanoDetDetector
from ingest.frames import Frame, FrameSlot

VEHICLES = Rule("vehicles", frozenset({"car", "truck", "bus"}), min_score=0.5, cooldown_s=0)
PEOPLE = Rule("people", frozenset({"person"}), min_score=0.5, cooldown_s=0)


def _alerts(clip: Path, detector: NanoDetDetector) -> tuple[list[str], set[str]]:
    """Every 5th frame (2 fps) through the motion gate, the loop (region crops on) and the rules."""
    evaluator = FrameEvaluator(RuleEngine([VEHICLES, PEOPLE]))
    labels: list[str] = []
    seen: set[str] = set()
    clock = [0.0]

    def on_result(frame: Frame, detections: Detections) -> None:
        seen.update(detections.labels)
        labels.extend(t.label for t in evaluator.evaluate(frame, detections)[1])

    slot = FrameSlot()
    loop = DetectorLoop({"cam": slot}, [detector], on_result, crops=CropPolicy(), clock=lambda: clock[0])
    gate = MotionGate()
    with av.open(str(clip)) as container:
        for i, decoded in enumerate(container.decode(video=0)):
            if i % 5:
                continue
            image = decoded.to_ndarray(format="bgr24")
            clock[0] = t = i / 10
            motion = gate.detect(image)
            slot.put(Frame("cam", image, t, 1e9 + t, 1, i, motion.moving, motion.regions))
            loop.process_batch(loop.collect())
    return labels, seen


def test_parked_vehicles_never_alert_and_walkers_do(models_dir: Path, media: dict[str, Path]) -> None:
    detector = NanoDetDetector(models_dir / "nanodet-m-416.onnx")
    empty_alerts, empty_seen = _alerts(media["empty"], detector)
    assert {"car", "truck"} & empty_seen, "the parked van and car are detected"
    assert empty_alerts == []
    people_alerts, people_seen = _alerts(media["people"], detector)
    assert {"car", "truck"} & people_seen
    assert "car" not in people_alerts and "truck" not in people_alerts and "bus" not in people_alerts
    # About 35 people cross in 80 s; each walker alerts once (29 measured).
    assert 20 <= people_alerts.count("person") <= 45
