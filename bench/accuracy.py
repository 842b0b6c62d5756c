"""Accuracy evaluation: alerts' precision and recall on labelled clips, through the real detector loop.

Clip sets (labels in bench/labels/, media from bench/accuracy_media.py):

- ``people``: vtest segments with hand-labelled intervals when someone stands in each of three zones (plus the
  empty street): one person-in-zone rule per zone (the demo's person rule with the zone and a short cooldown);
- ``far``: the same segments shrunk into a 1920x1080 wide view (people about 50 px tall): the same labels on
  the mapped zones, and person-detection recall against the detections on the same people at native scale;
- ``fire``: procedural flames composited onto real frames (SYNTHETIC fire), the demo's fire/smoke rule;
- ``negatives``: fire/smoke hard negatives (night lights, headlights, sunset, red clothing, the empty street,
  and the day-time vtest segments): raw fire/smoke detections against alerts.

Each clip is decoded with PyAV and sampled at 2 frames/s as the worker does (`detect_fps: 2`), run through
``detect.motion.MotionGate`` and ``detect.loop.DetectorLoop`` (driven by hand on stream time) into a fresh
``alerts.evaluator.FrameEvaluator`` per rule. Usage:

    .venv/bin/python bench/accuracy.py [--crops off|on|both] [--quick] [--sets people far fire negatives]
                                       [--json PATH]

``--quick``: only the shortest set (one vtest segment and the empty street), what the test runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Run as a script, bench/ comes first on sys.path, and bench/ingest.py would shadow the `ingest` package.
BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:] = [str(REPO), *(p for p in sys.path if Path(p or ".").resolve() != BENCH)]
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))  # for accuracy_media, after the packages

import accuracy_media  # noqa: E402
import av  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from alerts.evaluator import FrameEvaluator  # noqa: E402
from alerts.rules import Rule, RuleEngine  # noqa: E402
from detect.crops import CropPolicy  # noqa: E402
from detect.detections import Detections  # noqa: E402
from detect.loop import Detector, DetectorLoop  # noqa: E402
from detect.motion import MotionGate  # noqa: E402
from detect.nanodet import NanoDetDetector  # noqa: E402
from detect.tracker import iou_matrix  # noqa: E402
from detect.yolo import YoloDetector  # noqa: E402
from detect.zones import Zone  # noqa: E402
from ingest.frames import Frame, FrameSlot  # noqa: E402

DETECT_FPS = 2.0
T0 = 1_800_000_000.0  # captured_at = T0 + stream time
TOLERANCE_S = 1.0  # the labels' frame step: between two sheet frames the state is unknown
ZONE_COOLDOWN_S = 5.0  # person-in-zone rules; labelled visits closer than this are one expected alert
FIRE_LABELS = ("fire", "smoke")
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
REF_MIN_SCORE = 0.5  # person detections that count (the demo person rule's min_score)
MATCH_IOU = 0.3
# The worker's gate (160 px wide, 0.2 % of pixels changed) misses people ~50 px tall in a 1920x1080 view; this
# finer one (what a wide camera would need) sees them. The far clips are run with both.
FINE_GATE = {"width": 320, "min_changed": 0.0005}


# --- clips and labels ------------------------------------------------------------------------------------


@dataclass
class Clip:
    id: str
    set: str  # people | far | fire | negatives
    path: Path
    start_s: float = 0.0
    end_s: float | None = None
    zones: dict[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    intervals: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # per zone
    fire_from_s: float | None = None
    native: Path | None = None  # far clips: the native-scale source, for reference detections
    native_start_s: float = 0.0
    gate: dict[str, float] = field(default_factory=dict)  # MotionGate arguments; {}: the worker's defaults
    note: str = ""


def load_clips(media_dir: Path, sets: list[str], quick: bool = False) -> list[Clip]:
    people = accuracy_media.load_yaml("people.yaml")
    zones = {name: tuple((float(x), float(y)) for x, y in pts) for name, pts in people["zones"].items()}
    acc = media_dir / "accuracy"
    clips: list[Clip] = []
    for seg in people["segments"]:
        if quick and seg["id"] not in ("vtest-a", "empty-street"):
            continue
        intervals = {z: [(float(a), float(b)) for a, b in seg["in_zone"].get(z, [])] for z in zones}
        start, end = float(seg["start_s"]), float(seg["end_s"])
        if "people" in sets:
            clips.append(Clip(seg["id"], "people", media_dir / seg["media"], start, end, zones, intervals))
        if "far" in sets and seg.get("far") and not quick:
            far_zones = {z: tuple(accuracy_media.far_map_point(x, y) for x, y in p) for z, p in zones.items()}
            for set_name, gate in (("far", {}), ("far_fine_gate", FINE_GATE)):
                clips.append(
                    Clip(
                        f"far-{seg['id']}",
                        set_name,
                        acc / f"far-{seg['id']}.mp4",
                        0.0,
                        end - start,
                        far_zones,
                        intervals,
                        native=media_dir / seg["media"],
                        native_start_s=start,
                        gate=gate,
                    )
                )
    if quick:
        return clips
    for item in accuracy_media.load_yaml("fire.yaml")["clips"]:
        kind = "fire" if item["fire_from_s"] is not None else "negatives"
        if kind not in sets:
            continue
        path = media_dir / item["media"] if "media" in item else acc / f"{item['id']}.mp4"
        fire_from = None if item["fire_from_s"] is None else float(item["fire_from_s"])
        clips.append(Clip(item["id"], kind, path, fire_from_s=fire_from, note=item.get("note", "")))
    return clips


def merge_intervals(intervals: list[tuple[float, float]], gap: float) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(intervals):
        if out and a - out[-1][1] < gap:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


# --- rules -----------------------------------------------------------------------------------------------


def demo_rules() -> dict[str, Rule]:
    """The rules of configs/demo.yaml, as the runtime builds them (only the keys that Rule has)."""
    config = yaml.safe_load(DEMO_CONFIG.read_text())
    names = {f.name for f in dataclasses.fields(Rule)}
    rules = {}
    for raw in config["rules"]:
        args: dict[str, Any] = {k: v for k, v in raw.items() if k in names}
        args["labels"] = frozenset(raw["labels"])
        for key in ("cameras", "zones"):
            if args.get(key):
                args[key] = frozenset(args[key])
        rules[raw["name"]] = Rule(**args)
    return rules


def zone_rule(person: Rule, zone: str) -> Rule:
    return dataclasses.replace(
        person, name=f"person-in-{zone}", zones=frozenset([zone]), cooldown_s=ZONE_COOLDOWN_S
    )


# --- decoding, as the worker samples ---------------------------------------------------------------------


def sampled_frames(
    path: Path, start_s: float = 0.0, end_s: float | None = None
) -> Iterator[tuple[float, np.ndarray]]:
    """(time since start_s, BGR) at DETECT_FPS, sampled as ingest.source does (first frame, then 1/fps on)."""
    interval = 1.0 / DETECT_FPS
    next_sample = start_s
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            t = float(frame.time) if frame.time is not None else 0.0
            if t + 1e-6 < next_sample:
                continue
            if end_s is not None and t >= end_s - 1e-6:
                break
            next_sample = max(next_sample + interval, t)
            yield t - start_s, frame.to_ndarray(format="bgr24")


# --- the run ---------------------------------------------------------------------------------------------


class Counting:
    """Wraps a detector to count model inputs (whole frames and crops)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.names = inner.names
        self.inputs = 0
        self.busy_s = 0.0
        for attr in ("input_size", "imgsz"):
            if hasattr(inner, attr):
                setattr(self, attr, getattr(inner, attr))

    def detect(self, frame_bgr: np.ndarray) -> Detections:
        return self.detect_batch([frame_bgr])[0]

    def detect_batch(self, frames: list[np.ndarray]) -> list[Detections]:
        started = time.perf_counter()
        out = list(self.inner.detect_batch(frames))
        self.busy_s += time.perf_counter() - started
        self.inputs += len(frames)
        return out


@dataclass
class ClipRun:
    clip: Clip
    crops: bool
    sampled: int = 0
    run: int = 0
    alerts: dict[str, list[float]] = field(default_factory=dict)  # rule -> alert stream times
    fire_frames: int = 0  # frames run with a fire/smoke detection >= the rule's min_score
    fire_frames_any: int = 0  # ... >= the model's threshold (0.35)
    fire_dets: int = 0
    fire_max: float = 0.0
    fire_by_label: dict[str, int] = field(default_factory=dict)  # frames with that label >= min_score
    model_inputs: dict[str, int] = field(default_factory=dict)
    crop_inputs: int = 0  # of all models' inputs, how many were crops (the rest: whole frames)
    busy_s: float = 0.0
    ref_persons: int = 0  # far clips: reference persons (native scale, mapped)
    ref_matched: int = 0
    far_persons: int = 0  # far detections >= REF_MIN_SCORE
    far_unmatched: int = 0


class Evaluation:
    def __init__(self, models_dir: Path, threads: int = 1) -> None:
        self.objects = NanoDetDetector(
            models_dir / "nanodet-m-416.onnx", score_threshold=0.35, threads=threads
        )
        self.fire = YoloDetector(models_dir / "fire-yolov8.onnx", score_threshold=0.35, threads=threads)
        self.rules = demo_rules()
        self.person_rule = self.rules["people"]
        self.fire_rule = self.rules["fire-and-smoke"]

    def run_clip(self, clip: Clip, crops: bool, progress: Callable[[str], None] = print) -> ClipRun:
        result = ClipRun(clip, crops)
        camera = clip.id
        evaluators: dict[str, FrameEvaluator] = {}
        for name, polygon in clip.zones.items():
            rule = zone_rule(self.person_rule, name)
            evaluators[rule.name] = FrameEvaluator(
                RuleEngine([rule]), zones={camera: {name: Zone(name, polygon)}}
            )
        evaluators[self.fire_rule.name] = FrameEvaluator(RuleEngine([self.fire_rule]))
        result.alerts = {name: [] for name in evaluators}
        counters = [Counting(self.objects), Counting(self.fire)]
        detectors: list[Detector] = list(counters)
        seen: dict[float, Detections] = {}

        def on_result(frame: Frame, detections: Detections) -> None:
            seen[frame.time_s] = detections
            labels = detections.labels
            fire = [
                float(c)
                for c, label in zip(detections.confidence, labels, strict=True)
                if label in FIRE_LABELS
            ]
            result.fire_dets += len(fire)
            result.fire_frames_any += bool(fire)
            result.fire_frames += any(c >= self.fire_rule.min_score for c in fire)
            result.fire_max = max([result.fire_max, *fire])
            pairs = zip(detections.confidence, labels, strict=True)
            strong = {lb for c, lb in pairs if lb in FIRE_LABELS and c >= self.fire_rule.min_score}
            for label in strong:
                result.fire_by_label[label] = result.fire_by_label.get(label, 0) + 1
            for name, evaluator in evaluators.items():
                _, triggers = evaluator.evaluate(frame, detections)
                result.alerts[name] += [frame.time_s for _ in triggers]

        clock = [0.0]
        slot = FrameSlot()
        loop = DetectorLoop(
            slots={camera: slot},
            detectors=detectors,
            on_result=on_result,
            max_batch=4,
            refresh_s=10.0,
            crops=CropPolicy() if crops else None,
            clock=lambda: clock[0],
        )
        gate = MotionGate(**clip.gate)  # type: ignore[arg-type]
        for seq, (t, image) in enumerate(sampled_frames(clip.path, clip.start_s, clip.end_s)):
            motion = gate.detect(image)
            clock[0] = t
            slot.put(Frame(camera, image, t, T0 + t, 1, seq, motion=motion.moving, regions=motion.regions))
            result.sampled += 1
            batch = loop.collect()
            if batch:
                loop.process_batch(batch)
                result.run += len(batch)
        result.model_inputs = {"nanodet": counters[0].inputs, "fire": counters[1].inputs}
        result.crop_inputs = loop.stats.crop_inputs
        result.busy_s = counters[0].busy_s + counters[1].busy_s
        if clip.native is not None:
            self._far_reference(clip, seen, result)
        progress(
            f"  {clip.id:<16} {clip.set:<13} crops={'on ' if crops else 'off'} sampled={result.sampled:3d} "
            f"run={result.run:3d} "
            f"alerts={sum(len(v) for v in result.alerts.values())} inputs/frame="
            f"{result.model_inputs['nanodet'] / max(result.run, 1):.2f}"
        )
        return result

    def _far_reference(self, clip: Clip, seen: dict[float, Detections], result: ClipRun) -> None:
        """NanoDet on the native-scale frames at the same times; its persons, mapped, are the reference."""
        assert clip.native is not None
        start = clip.native_start_s
        for t, image in sampled_frames(clip.native, start, start + (clip.end_s or 0.0)):
            # A frame that was not run (no motion, no refresh due) found nobody.
            far = seen.get(t, Detections.empty(("person",)))
            ref = self.objects.detect(image)
            ref_boxes = ref.xyxy[(ref.confidence >= REF_MIN_SCORE) & (ref.class_id == 0)]
            ref_boxes = accuracy_media.far_map_boxes(ref_boxes)
            persons = np.array([label == "person" for label in far.labels], dtype=bool)
            far_boxes = far.xyxy[persons & (far.confidence >= REF_MIN_SCORE)]
            matched_ref, matched_far = _greedy_match(ref_boxes, far_boxes)
            result.ref_persons += len(ref_boxes)
            result.ref_matched += matched_ref
            result.far_persons += len(far_boxes)
            result.far_unmatched += len(far_boxes) - matched_far


def _greedy_match(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    ious = iou_matrix(a.astype(np.float32), b.astype(np.float32))
    matched = 0
    while ious.size and ious.max() >= MATCH_IOU:
        r, c = np.unravel_index(int(np.argmax(ious)), ious.shape)
        ious[r, :] = 0.0
        ious[:, c] = 0.0
        matched += 1
    return matched, matched


# --- scoring ---------------------------------------------------------------------------------------------


@dataclass
class Score:
    expected: int = 0
    raised: int = 0
    tp: int = 0
    fp: int = 0
    hit: int = 0  # expected alerts (intervals, fire clips) that got at least one alert
    latencies: list[float] = field(default_factory=list)

    def add(self, other: Score) -> None:
        self.expected += other.expected
        self.raised += other.raised
        self.tp += other.tp
        self.fp += other.fp
        self.hit += other.hit
        self.latencies += other.latencies

    def as_dict(self) -> dict[str, Any]:
        return {
            "alerts_expected": self.expected,
            "alerts_raised": self.raised,
            "true_positives": self.tp,
            "false_positives": self.fp,
            "expected_hit": self.hit,
            "precision": round(self.tp / self.raised, 3) if self.raised else None,
            "recall": round(self.hit / self.expected, 3) if self.expected else None,
            "time_to_first_alert_s": {
                "median": round(float(np.median(self.latencies)), 2) if self.latencies else None,
                "max": round(max(self.latencies), 2) if self.latencies else None,
            },
        }


def score_zones(run: ClipRun) -> dict[str, Score]:
    scores: dict[str, Score] = {}
    for zone in run.clip.zones:
        intervals = merge_intervals(run.clip.intervals.get(zone, []), ZONE_COOLDOWN_S)
        alerts = run.alerts[f"person-in-{zone}"]
        s = Score(expected=len(intervals), raised=len(alerts))
        for t in alerts:
            inside = any(a - TOLERANCE_S <= t <= b + TOLERANCE_S for a, b in intervals)
            s.tp += inside
            s.fp += not inside
        for a, b in intervals:
            times = [t for t in alerts if a - TOLERANCE_S <= t <= b + TOLERANCE_S]
            if times:
                s.hit += 1
                s.latencies.append(max(0.0, min(times) - a))
        scores[zone] = s
    return scores


def score_fire(run: ClipRun, fire_rule: str) -> Score:
    alerts = run.alerts[fire_rule]
    fire_from = run.clip.fire_from_s
    s = Score(expected=int(fire_from is not None), raised=len(alerts))
    for t in alerts:
        ok = fire_from is not None and t >= fire_from - TOLERANCE_S
        s.tp += ok
        s.fp += not ok
    if fire_from is not None:
        times = [t for t in alerts if t >= fire_from - TOLERANCE_S]
        if times:
            s.hit = 1
            s.latencies.append(max(0.0, min(times) - fire_from))
    return s


def summarise(runs: list[ClipRun], fire_rule: str) -> dict[str, Any]:
    """Per crops mode and clip set: the person-in-zone scores, the fire scores, raw fire detections, cost."""
    out: dict[str, Any] = {}
    for mode in sorted({r.crops for r in runs}):
        key = "crops_on" if mode else "crops_off"
        sets: dict[str, Any] = {}
        for set_name in ("people", "far", "far_fine_gate", "fire", "negatives"):
            chosen = [r for r in runs if r.crops == mode and r.clip.set == set_name]
            if not chosen:
                continue
            zone_total, fire_total = Score(), Score()
            clips = []
            for r in chosen:
                entry: dict[str, Any] = {
                    "clip": r.clip.id,
                    "frames_sampled": r.sampled,
                    "frames_run": r.run,
                    "motion_gate": r.clip.gate or "worker default",
                    "model_inputs_per_frame_run": {
                        k: round(v / max(r.run, 1), 3) for k, v in r.model_inputs.items()
                    },
                    "crop_share_of_inputs": round(r.crop_inputs / max(sum(r.model_inputs.values()), 1), 3),
                    "model_busy_ms_per_frame_run": round(1000 * r.busy_s / max(r.run, 1), 1),
                }
                if r.clip.zones:
                    zs = score_zones(r)
                    entry["zones"] = {
                        z: s.as_dict() | {"alert_times_s": r.alerts[f"person-in-{z}"]} for z, s in zs.items()
                    }
                    for s in zs.values():
                        zone_total.add(s)
                fs = score_fire(r, fire_rule)
                fire_total.add(fs)
                entry["fire"] = fs.as_dict() | {
                    "alert_times_s": r.alerts[fire_rule],
                    "raw_frames_fire_or_smoke": r.fire_frames_any,
                    "raw_frames_fire_or_smoke_over_min_score": r.fire_frames,
                    "raw_detections": r.fire_dets,
                    "raw_max_score": round(r.fire_max, 3),
                    "raw_frames_over_min_score_by_label": r.fire_by_label,
                    "raw_rate": round(r.fire_frames / max(r.run, 1), 3),
                }
                if r.clip.native is not None:
                    entry["far_reference"] = {
                        "reference_persons": r.ref_persons,
                        "matched": r.ref_matched,
                        "recall": round(r.ref_matched / r.ref_persons, 3) if r.ref_persons else None,
                        "far_persons": r.far_persons,
                        "far_unmatched": r.far_unmatched,
                    }
                clips.append(entry)
            summary: dict[str, Any] = {"clips": clips}
            if set_name.startswith(("people", "far")):
                summary["person_in_zone"] = zone_total.as_dict()
            summary["fire"] = fire_total.as_dict()
            run_frames = sum(r.run for r in chosen)
            summary["model_inputs_per_frame_run"] = {
                k: round(sum(r.model_inputs[k] for r in chosen) / max(run_frames, 1), 3)
                for k in ("nanodet", "fire")
            }
            summary["model_busy_ms_per_frame_run"] = round(
                1000 * sum(r.busy_s for r in chosen) / max(run_frames, 1), 1
            )
            if set_name.startswith("far"):
                refs = sum(r.ref_persons for r in chosen)
                matched = sum(r.ref_matched for r in chosen)
                summary["far_reference"] = {
                    "reference_persons": refs,
                    "matched": matched,
                    "recall": round(matched / refs, 3) if refs else None,
                    "far_persons": sum(r.far_persons for r in chosen),
                    "far_unmatched": sum(r.far_unmatched for r in chosen),
                }
            sets[set_name] = summary
        out[key] = sets
    return out


def evaluate(
    models_dir: Path,
    media_dir: Path,
    sets: list[str],
    crops: str = "off",
    quick: bool = False,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The core: build the media if needed, run every clip in each crops mode, score. Returns the report."""
    clips = load_clips(media_dir, sets, quick)
    built = [c.id for c in clips if c.path.parent == media_dir / "accuracy"]
    if built:
        accuracy_media.prepare(media_dir, progress=progress, only=built)
    evaluation = Evaluation(models_dir)
    modes = {"off": [False], "on": [True], "both": [False, True]}[crops]
    runs: list[ClipRun] = []
    started = time.monotonic()
    for mode in modes:
        progress(f"crops {'on' if mode else 'off'}: {len(clips)} clips")
        for clip in clips:
            runs.append(evaluation.run_clip(clip, mode, progress))
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}",
        "elapsed_s": round(time.monotonic() - started, 1),
        "settings": {
            "detect_fps": DETECT_FPS,
            "tolerance_s": TOLERANCE_S,
            "zone_rule": _jsonable(dataclasses.asdict(zone_rule(evaluation.person_rule, "ZONE"))),
            "fire_rule": _jsonable(dataclasses.asdict(evaluation.fire_rule)),
            "crop_policy": dataclasses.asdict(CropPolicy()),
        },
        "results": summarise(runs, evaluation.fire_rule.name),
    }


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: sorted(v) if isinstance(v, frozenset) else str(v)))


# --- printing --------------------------------------------------------------------------------------------


def _f(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def print_tables(report: dict[str, Any]) -> None:
    for mode, sets in report["results"].items():
        print(f"\n== {mode} ==")
        print(f"{'set':<10} {'kind':<15} {'expected':>8} {'raised':>6} {'TP':>4} {'FP':>4} {'hit':>4} "
              f"{'precision':>9} {'recall':>6} {'t1st med':>8} {'t1st max':>8}")  # fmt: skip
        for name, s in sets.items():
            for kind in ("person_in_zone", "fire"):
                if kind not in s:
                    continue
                d = s[kind]
                t = d["time_to_first_alert_s"]
                print(
                    f"{name:<10} {kind:<15} {d['alerts_expected']:>8} {d['alerts_raised']:>6} "
                    f"{d['true_positives']:>4} {d['false_positives']:>4} {d['expected_hit']:>4} "
                    f"{_f(d['precision']):>9} {_f(d['recall']):>6} {_f(t['median']):>8} {_f(t['max']):>8}"
                )
        print(f"\n{'clip':<22} {'set':<10} {'run/sampled':>11} {'fire alerts':>11} {'raw fire>=min':>13} "
              f"{'raw max':>7} {'zone TP/FP/exp':>14} {'inputs/frame':>12} {'ms/frame':>8}")  # fmt: skip
        for name, s in sets.items():
            for c in s["clips"]:
                zones = c.get("zones", {})
                ztp = sum(z["true_positives"] for z in zones.values())
                zfp = sum(z["false_positives"] for z in zones.values())
                zexp = sum(z["alerts_expected"] for z in zones.values())
                f = c["fire"]
                inputs = c["model_inputs_per_frame_run"]
                print(
                    f"{c['clip']:<22} {name:<10} {c['frames_run']:>5}/{c['frames_sampled']:<5} "
                    f"{f['alerts_raised']:>11} {f['raw_frames_fire_or_smoke_over_min_score']:>13} "
                    f"{f['raw_max_score']:>7.2f} {f'{ztp}/{zfp}/{zexp}' if zones else '-':>14} "
                    f"{inputs['nanodet']:>5.2f}+{inputs['fire']:<5.2f} "
                    f"{c['model_busy_ms_per_frame_run']:>8.1f}"
                )
        for name in ("far", "far_fine_gate"):
            if name not in sets:
                continue
            ref = sets[name]["far_reference"]
            print(
                f"\n{name}: person detections vs native reference: "
                f"{ref['matched']}/{ref['reference_persons']}, recall {_f(ref['recall'])}; "
                f"far detections {ref['far_persons']} ({ref['far_unmatched']} unmatched)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--crops", choices=["off", "on", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="only the shortest set (what the test runs)")
    parser.add_argument("--sets", nargs="*", default=["people", "far", "fire", "negatives"])
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=Path(os.environ.get("GRIDWATCH_MODELS_DIR", REPO / ".cache" / "models")),
    )
    parser.add_argument("--media-dir", type=Path, default=accuracy_media.default_media_dir())
    parser.add_argument("--json", type=Path, default=REPO / ".cache" / "accuracy" / "accuracy.json")
    args = parser.parse_args()
    report = evaluate(args.models_dir, args.media_dir, args.sets, args.crops, args.quick)
    print_tables(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {args.json} ({report['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main()
