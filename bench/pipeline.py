"""Benchmark: how many mostly-still cameras the detection loop sustains, against the naive loop and FFmpeg.

N simulated RTSP cameras replay the scenes of ``bench/scenes.py`` (60 s of the empty street with one 8 s
burst of real people footage; the bursts of different cameras at different times), each camera on its own
looping mount. Three measurements, in this order:

1. **FFmpeg's decode limit**: ``ffmpeg -benchmark -threads 1`` on a scene file (``bench/ingest.py``'s
   reference): frames per CPU-second, turned into 10 fps cameras on this machine's cores.
2. **GridWatch** (``gridwatch.runtime.Runtime``: embedded valkey, SeaweedFS and SQLite, API off, the demo's
   rules, ``detect_fps`` 2): a search over the ``--cameras`` counts from ``--start``, up while sustained,
   down until sustained.
3. **The naive loop** (``bench/naive_loop.py``): a thread per camera, ``cv2.VideoCapture`` and the models on
   every frame. Sustained when every camera keeps the stream's 10 fps (no growing backlog) and the bursts
   alert in time; below one camera, the share of one camera's frames it keeps up with is its figure.

Alert latency (GridWatch) is the time this script read the alert from the Redis stream ``gridwatch:alerts``
(XREAD BLOCK in a thread) minus the capture time of the frame that raised it (``frame_time``: when its first
packet reached the process; from the bus entry, else the alert's database row). The ground truth is the
scene timing from the start of each camera's publisher, plus the relay delay to the client, which each run
calibrates from the first motion sampled at each burst (a keyframe cut). Recall is bursts that raised a
person alert / bursts that started in the measured window. Sustained: every camera with people on screen
gets at least ``--min-coverage`` of its ``detect_fps`` through the detector, p95 latency at most
``--max-p95`` s, and recall at least ``--min-recall``. Usage:

    .venv/bin/python bench/pipeline.py [--cameras 1,2,4,8,12,16,24,32] [--start 8] [--seconds 75]
                                       [--no-fire] [--quick] [--json PATH]

Progress lines every few seconds, a JSON result at the end (``--json PATH`` also writes it to a file).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

# Run as a script, bench/ comes first on sys.path, and bench/ingest.py would shadow the `ingest` package.
BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:] = [str(REPO), *(p for p in sys.path if Path(p or ".").resolve() != BENCH)]

from bench.ingest import _process_cpu, _tree_cpu, ffmpeg_reference  # noqa: E402
from bench.naive_loop import NaiveLoop  # noqa: E402
from bench.scenes import BURST_S, Scene, prepare_scenes  # noqa: E402
from detect.motion import MotionGate  # noqa: E402
from gridwatch.alerting import build_rule  # noqa: E402
from gridwatch.models import load_detectors  # noqa: E402
from gridwatch.runtime import Runtime  # noqa: E402
from gridwatch.settings import (  # noqa: E402
    ApiSettings,
    CameraSettings,
    GridSettings,
    ModelSettings,
    RuleSettings,
    Settings,
    VillageSettings,
)
from ingest.frames import Frame, FrameSlot  # noqa: E402
from ingest.simulator.server import Mount, RtspSimulator  # noqa: E402
from ingest.source import CameraSource, SourceConfig  # noqa: E402
from ingest.state import StreamState  # noqa: E402

CAMERA_FPS = 10.0
DETECT_FPS = 2.0
PROGRESS_EVERY_S = 5.0
CONNECT_TIMEOUT_S = 90.0
MATCH_BEFORE_S = 1.5  # an alert belongs to a burst when its frame is from start - 1.5 s ...
MATCH_AFTER_S = 2.0  # ... to end + 2 s (the publisher start time is known to a few tenths of a second)
COVERAGE_SKIP_S = 1.0  # the first second of a burst: the idle stream decodes keyframes only (1 fps)
COVERAGE_TAIL_S = 0.5
NAIVE_MAX_LAG_S = 2.0
NAIVE_MIN_FPS_SHARE = 0.95
OBSERVER = "observer"  # the extra mount that calibrates the naive loop's ground truth
NAIVE_REACH_S = 4.0  # a burst counts for the naive loop's recall once it has run this much of it


# --- the cameras ---------------------------------------------------------------------------------------


@dataclass
class Site:
    """The simulator serving N cameras, each replaying one scene from a known wall time."""

    simulator: RtspSimulator
    scenes: dict[str, Scene]  # camera id -> scene
    t0: dict[str, float]  # camera id -> wall time its looping publisher started
    urls: dict[str, str]
    # Publisher start to the first packet reaching a client (ffmpeg start-up, the UDP relay, RTSP): the
    # ground truth is in packet-arrival time, as the pipeline's capture times are. Measured per camera where
    # possible (`delays`), else `delay` (see `calibrate`).
    delay: float = 0.0
    delays: dict[str, float] = field(default_factory=dict)

    def bursts(self, camera_id: str, start: float, end: float) -> list[tuple[float, float]]:
        shift = self.delays.get(camera_id, self.delay)
        return self.scenes[camera_id].bursts(self.t0[camera_id] + shift, start, end)

    def stop(self) -> None:
        self.simulator.stop()


def start_site(count: int, scenes: Sequence[Scene], observer: bool = False) -> Site:
    """Each camera replays one scene on its own looping mount (its own ffmpeg publisher); the cameras'
    scenes are spread over the phases (i % phases, or evenly with fewer cameras than phases). With
    `observer`, one more mount (OBSERVER, the first camera's scene) for `observe` to calibrate with."""
    ids = [f"cam{index:02d}" for index in range(count)]
    phases = len(scenes)
    by_camera = {
        cid: scenes[index % phases if count >= phases else index * phases // count]
        for index, cid in enumerate(ids)
    }
    if observer:
        ids.append(OBSERVER)
        by_camera[OBSERVER] = by_camera[ids[0]]
    simulator = RtspSimulator([Mount(cid, "file", path=by_camera[cid].path, loop=True) for cid in ids])
    launched = time.time()
    simulator.start(timeout=60)
    t0 = dict(zip(ids, _publisher_starts(simulator, launched, len(ids)), strict=True))
    return Site(simulator, by_camera, t0, {cid: simulator.url(cid) for cid in ids})


def observe(site: Site, clip_dir: Path) -> tuple[CameraSource, SlotTap]:
    """A GridWatch camera source with the motion gate on the observer mount, for the ground truth only.

    The naive loop cannot say when a frame arrived, so its site is calibrated on this (its decode, in
    keyframes-only mode while idle, costs about 0.015 cores and is counted in the naive loop's CPU)."""
    gate = MotionGate()
    motion = gate if callable(gate) else gate.update
    slot = FrameSlot()
    tap = SlotTap()
    tap.attach({OBSERVER: slot})
    source = CameraSource(SourceConfig(OBSERVER, site.urls[OBSERVER]), slot, clip_dir, motion=motion)
    source.start()
    return source, tap


def _publisher_starts(simulator: RtspSimulator, launched: float, count: int) -> list[float]:
    """Wall start times of the ffmpeg publishers, in mount order (the server starts them in that order).

    psutil's create_time is exact to 10 ms relative to other processes but offset by the rounding of the
    boot time, so it is rebased on the server process, which started when `launched` was taken.
    """
    assert simulator.pid is not None
    server = psutil.Process(simulator.pid)
    children = sorted(
        (p for p in server.children(recursive=True) if "ffmpeg" in p.name()), key=lambda p: p.pid
    )
    if len(children) != count:
        raise SystemExit(f"expected {count} ffmpeg publishers under the simulator, found {len(children)}")
    shift = server.create_time() - launched
    return [child.create_time() - shift for child in children]


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# --- scoring against the ground truth -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RaisedAlert:
    camera_id: str
    label: str
    frame_time: float  # wall time of the frame's capture
    seen_at: float  # wall time the alert reached the reader (bus) or was raised (naive)
    earliest: float | None = None  # where the capture time is only bracketed: the earliest it can be


def window_bursts(site: Site, start: float, end: float) -> dict[str, list[tuple[float, float]]]:
    """Per camera, the bursts that started in [start, end - BURST_S] (so they ended in the window)."""
    return {cid: site.bursts(cid, start, end - BURST_S) for cid in site.scenes}


def score_alerts(
    site: Site,
    alerts: Sequence[RaisedAlert],
    expected: dict[str, list[tuple[float, float]]],
    start: float,
    end: float,
) -> dict[str, Any]:
    """Recall over the `expected` bursts; latency and false alerts over alerts of frames from [start, end]."""
    total = found = 0
    missed: list[str] = []
    in_window = [a for a in alerts if start <= a.frame_time <= end]
    matched_alerts: set[int] = set()
    onset: list[float] = []
    for camera_id in site.scenes:
        every_burst = site.bursts(camera_id, start - 120.0, end + 120.0)
        for index, alert in enumerate(in_window):
            if alert.camera_id == camera_id and any(_matches(alert, b, e) for b, e in every_burst):
                matched_alerts.add(index)
        for begin, finish in expected.get(camera_id, []):
            total += 1
            hits = [
                a
                for a in alerts
                if a.camera_id == camera_id and a.label == "person" and _matches(a, begin, finish)
            ]
            if hits:
                found += 1
                onset.append(min(a.seen_at for a in hits) - begin)
            else:
                missed.append(f"{camera_id}@{begin - site.t0[camera_id]:.0f}s")
    latencies = [a.seen_at - a.frame_time for a in in_window]
    false_alerts = [a for index, a in enumerate(in_window) if index not in matched_alerts]
    return {
        "bursts": total,
        "bursts_alerted": found,
        "recall": _r(found / total) if total else None,
        "missed": missed,
        "alerts": len(in_window),
        "alerts_by_label": _count(a.label for a in in_window),
        "false_alerts": len(false_alerts),
        "false_alerts_by_label": _count(a.label for a in false_alerts),
        "latency_p50_s": _r(_percentile(latencies, 0.50)),
        "latency_p95_s": _r(_percentile(latencies, 0.95)),
        "latency_max_s": _r(max(latencies)) if latencies else None,
        # From the moment people appear to the alert: includes min_hits detections and the idle decode mode.
        "onset_to_alert_p50_s": _r(_percentile(onset, 0.50)),
        "onset_to_alert_p95_s": _r(_percentile(onset, 0.95)),
    }


def _matches(alert: RaisedAlert, begin: float, end: float) -> bool:
    """The alert's frame (or its capture-time bracket) overlaps the burst, with the match tolerances."""
    earliest = alert.frame_time if alert.earliest is None else alert.earliest
    return alert.frame_time >= begin - MATCH_BEFORE_S and earliest <= end + MATCH_AFTER_S


def _count(labels: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return counts


# --- GridWatch ---------------------------------------------------------------------------------------


class BusReader(threading.Thread):
    """XREAD BLOCK on the alert stream; notes when each entry arrived."""

    def __init__(self, url: str, stream: str) -> None:
        super().__init__(name="bench-bus-reader", daemon=True)
        self.client = redis.Redis.from_url(url, socket_timeout=10)
        self.stream = stream
        self.entries: list[tuple[float, dict[str, str]]] = []
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        last = "0-0"
        while not self._stop_event.is_set():
            try:
                reply: Any = self.client.xread({self.stream: last}, block=500, count=200)
            except redis.RedisError:
                self._stop_event.wait(0.5)
                continue
            seen_at = time.time()
            for _stream, items in reply or []:
                for entry_id, fields in items:
                    last = entry_id
                    decoded = {_text(k): _text(v) for k, v in fields.items()}
                    self.entries.append((seen_at, decoded))
        self.client.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class SlotTap:
    """Wraps each camera's FrameSlot.put: every frame the sources sampled, with its motion flag."""

    samples: list[tuple[str, float, bool]] = field(default_factory=list)  # camera, captured, motion

    def attach(self, slots: dict[str, Any]) -> None:
        for slot in slots.values():
            put = slot.put

            def tapped(frame: Frame, put: Callable[[Frame], None] = put) -> None:
                self.samples.append((frame.camera_id, frame.captured_at, frame.motion))
                put(frame)

            slot.put = tapped


def calibrate(site: Site, samples: Sequence[tuple[str, float, bool]]) -> dict[str, Any]:
    """Set the site's delays from when motion was first sampled at each burst's cut (a keyframe, so even the
    idle keyframes-only decode samples it) against the publisher-start prediction: per camera, the median
    over its bursts; `site.delay`, the median over all, for cameras without one."""
    site.delay, site.delays = 0.0, {}
    offsets: dict[str, list[float]] = {}
    for cid in site.scenes:
        mine = [(captured, motion) for c, captured, motion in samples if c == cid]
        if not mine:
            continue
        moving = [captured for captured, motion in mine if motion]
        # Not a burst that began while the stream was opening (the motion gate learns its first frame).
        settled = min(captured for captured, _ in mine) + 2.0
        for begin, _ in site.bursts(cid, settled, time.time()):
            near = [captured - begin for captured in moving if begin - 1.0 <= captured <= begin + 4.0]
            if near:
                offsets.setdefault(cid, []).append(min(near))
    every = [offset for values in offsets.values() for offset in values]
    if every:
        site.delay = statistics.median(every)
    site.delays = {cid: statistics.median(values) for cid, values in offsets.items()}
    spread = [offset - site.delays[cid] for cid, values in offsets.items() for offset in values]
    return {
        "delay_s": _r(site.delay),
        "delay_min_s": _r(min(site.delays.values())) if site.delays else None,
        "delay_max_s": _r(max(site.delays.values())) if site.delays else None,
        "bursts": len(every),
        "cameras_calibrated": len(site.delays),
        # First motion sample of each burst around its camera's calibrated start: should be ~0.
        "spread_min_s": _r(min(spread)) if spread else None,
        "spread_max_s": _r(max(spread)) if spread else None,
    }


@dataclass
class DetectorTap:
    """Wraps the detector loop's result callback: which frames of which camera the models ran on."""

    inner: Callable[[Frame, Any], object]
    runs: list[tuple[str, float, bool, float]] = field(default_factory=list)  # camera, captured, motion, done

    def __call__(self, frame: Frame, detections: Any) -> object:
        self.runs.append((frame.camera_id, frame.captured_at, frame.motion, time.time()))
        return self.inner(frame, detections)


def bench_rules(fire: bool) -> list[RuleSettings]:
    """The demo's rules: people (one alert per burst with the 30 s cooldown), fire and smoke."""
    rules = [RuleSettings(name="people", labels=["person"], min_score=0.5, cooldown_s=30)]
    if fire:
        rules.append(
            RuleSettings(
                name="fire-and-smoke",
                labels=["fire", "smoke"],
                min_score=0.4,
                label_min_score={"fire": 0.6},
                min_hits=3,
                window=5,
                min_flicker=4,
                cooldown_s=30,
            )
        )
    return rules


def gridwatch_settings(
    site: Site, data_dir: Path, models_dir: Path, fire: bool, threads: int = 1, workers: int = 2
) -> Settings:
    rules = bench_rules(fire)
    return Settings(
        data_dir=data_dir,
        log_level="WARNING",
        api=ApiSettings(enabled=False),
        models=ModelSettings(dir=models_dir, threads=threads, inference_workers=workers, fire_enabled=fire),
        villages=[VillageSettings(id="bench", name="Bench village")],
        grids=[GridSettings(id="bench-1", name="Bench grid", village="bench")],
        cameras=[
            CameraSettings(
                id=cid,
                name=f"Bench camera {cid}",
                village="bench",
                grid="bench-1",
                url=url,  # type: ignore[arg-type]
                detect_fps=DETECT_FPS,
            )
            for cid, url in site.urls.items()
        ],
        rules=rules,
    )


def run_gridwatch(
    count: int, scenes: Sequence[Scene], args: argparse.Namespace, models_dir: Path
) -> dict[str, Any]:
    tag = f"[ours {count:>3}]"
    site = start_site(count, scenes)
    data_dir = Path(tempfile.mkdtemp(prefix="gw-bench-pipeline-"))
    runtime: Runtime | None = None
    reader: BusReader | None = None
    try:
        settings = gridwatch_settings(
            site, data_dir, models_dir, not args.no_fire, args.threads, args.workers
        )
        print(f"{tag} starting the runtime ({count} cameras) ...", flush=True)
        runtime = Runtime(settings).start()
        assert runtime.loop is not None and runtime.db is not None
        tap = DetectorTap(runtime.loop.on_result)
        runtime.loop.on_result = tap
        sampled = SlotTap()
        sampled.attach(runtime.slots)
        reader = BusReader(runtime.redis_url, settings.redis.stream)
        reader.start()
        _wait_online(runtime, tag)
        print(f"{tag} all cameras online; warming up {args.warmup:g} s ...", flush=True)
        time.sleep(args.warmup)
        _align(site, tag)

        def counters() -> dict[str, Any]:
            loop = runtime.loop if runtime is not None else None
            assert loop is not None and runtime is not None
            return {
                "at": time.time(),
                "cpu": _process_cpu(),
                "sim_cpu": _tree_cpu(site.simulator.pid),
                "frames": loop.stats.frames,
                "skipped": loop.stats.skipped_still,
                "busy": loop.stats.busy_s,
                # Whole frames plus region crops given to the models, where the loop counts them.
                "inputs": getattr(loop.stats, "model_inputs", None),
                "sampled": {c: s.detect.frames_sampled for c, s in runtime.sources.items()},
                "decoded": {c: s.detect.frames_decoded for c, s in runtime.sources.items()},
                "dropped": {c: slot.dropped for c, slot in runtime.slots.items()},
                "reconnects": sum(s.detect.reconnects for s in runtime.sources.values()),
            }

        first = last = counters()
        while (elapsed := time.time() - first["at"]) < args.seconds:
            time.sleep(min(PROGRESS_EVERY_S, args.seconds - elapsed))
            now = counters()
            wall = now["at"] - last["at"]
            frames = now["frames"] - last["frames"]
            motion = sum(1 for run in tap.runs if run[3] >= last["at"] and run[2])
            print(
                f"{tag} {now['at'] - first['at']:5.1f}/{args.seconds:g} s  cpu"
                f" {(now['cpu'] - last['cpu']) / wall:.2f}"
                f" cores (sim {(now['sim_cpu'] - last['sim_cpu']) / wall:.2f})  detector {frames / wall:.1f}"
                f" frames/s ({motion} with motion), busy {(now['busy'] - last['busy']) / wall:.0%}  dropped"
                f" {sum(now['dropped'].values()) - sum(last['dropped'].values())}  alerts"
                f" {sum(1 for _, e in reader.entries if e.get('kind') == 'alert')}",
                flush=True,
            )
            last = now
        end = counters()
        time.sleep(args.grace)  # alerts of the last frames still in flight
        alerts = _bus_alerts(reader, runtime)
        ground_truth = calibrate(site, sampled.samples)
        result = _gridwatch_result(count, site, first, end, tap, alerts, ground_truth, args)
        print(f"{tag} {_verdict_line(result)}", flush=True)
        return result
    finally:
        if reader is not None:
            reader.stop()
            reader.join(5)
        if runtime is not None:
            print(f"{tag} stopping ...", flush=True)
            runtime.stop()
        site.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def _align(site: Site, tag: str, longest_s: float = 15.0) -> None:
    """Start measuring just before the next burst, when it is near: short runs then see one for sure."""
    now = time.time()
    upcoming = [b for cid in site.scenes for b, _ in site.bursts(cid, now + 1.0, now + 1.0 + longest_s)]
    if upcoming:
        wait = min(upcoming) - 1.0 - now
        print(f"{tag} starting the measurement {wait:.1f} s from now, just before a burst", flush=True)
        time.sleep(max(0.0, wait))


def _wait_online(runtime: Runtime, tag: str) -> None:
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while True:
        states = {cid: source.detect.machine.state for cid, source in runtime.sources.items()}
        if all(state == StreamState.ONLINE for state in states.values()):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{tag} cameras not online within {CONNECT_TIMEOUT_S:g} s: {states}")
        time.sleep(0.5)


def _bus_alerts(reader: BusReader, runtime: Runtime) -> list[RaisedAlert]:
    assert runtime.db is not None
    alerts = []
    for seen_at, entry in list(reader.entries):
        if entry.get("kind") != "alert":
            continue
        if entry.get("frame_time"):  # newer bus messages carry it; else the database row has it
            frame_time = datetime.datetime.fromisoformat(entry["frame_time"]).timestamp()
        else:
            row = runtime.db.get_alert(entry["alert_id"])
            if row is None:
                continue
            frame_time = row.frame_time.timestamp()
        alerts.append(RaisedAlert(entry["camera_id"], entry.get("label", ""), frame_time, seen_at))
    return alerts


def _gridwatch_result(
    count: int,
    site: Site,
    first: dict[str, Any],
    end: dict[str, Any],
    tap: DetectorTap,
    alerts: list[RaisedAlert],
    ground_truth: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, Any]:
    start_at, end_at = first["at"], end["at"]
    wall = end_at - start_at
    cpu = end["cpu"] - first["cpu"]
    runs = [run for run in tap.runs if start_at <= run[1] <= end_at]
    detection_latency = [done - captured for _, captured, _, done in runs]
    cameras: dict[str, dict[str, Any]] = {}
    coverages: list[float] = []
    for cid in site.scenes:
        expected = got = 0.0
        for begin, finish in site.bursts(cid, start_at, end_at - BURST_S):
            lo, hi = begin + COVERAGE_SKIP_S, finish - COVERAGE_TAIL_S
            expected += DETECT_FPS * (hi - lo)
            got += sum(1 for c, captured, _, _ in runs if c == cid and lo <= captured < hi)
        coverage = got / expected if expected else None
        if coverage is not None:
            coverages.append(coverage)
        cameras[cid] = {
            "scene_phase": site.scenes[cid].phase,
            "sampled_fps": round((end["sampled"][cid] - first["sampled"][cid]) / wall, 2),
            "decoded_fps": round((end["decoded"][cid] - first["decoded"][cid]) / wall, 2),
            "detected_fps": round(sum(1 for run in runs if run[0] == cid) / wall, 2),
            "dropped_in_slot": end["dropped"][cid] - first["dropped"][cid],
            "burst_coverage": _r(coverage),
        }
    score = score_alerts(site, alerts, window_bursts(site, start_at, end_at), start_at, end_at)
    min_coverage = min(coverages) if coverages else None
    checks = {
        "coverage": min_coverage is not None and min_coverage >= args.min_coverage,
        "latency": score["latency_p95_s"] is not None and score["latency_p95_s"] <= args.max_p95,
        "recall": score["recall"] is not None and score["recall"] >= args.min_recall,
    }
    frames = end["frames"] - first["frames"]
    return {
        "cameras": count,
        "sustained": all(checks.values()),
        "checks": checks,
        "seconds": round(wall, 1),
        "process_cpu_cores": round(cpu / wall, 3),
        "cpu_cores_per_camera": round(cpu / wall / count, 4),
        "simulator_cpu_cores": round((end["sim_cpu"] - first["sim_cpu"]) / wall, 3),
        "detector_frames_per_s": round(frames / wall, 2),
        "detector_motion_frames_per_s": round(sum(1 for run in runs if run[2]) / wall, 2),
        "detector_busy_share": round((end["busy"] - first["busy"]) / wall, 3),
        "detector_ms_per_frame": round(1000 * (end["busy"] - first["busy"]) / max(frames, 1), 1),
        "model_inputs_per_frame": round((end["inputs"] - first["inputs"]) / max(frames, 1), 2)
        if end["inputs"] is not None
        else None,
        "still_frames_skipped_per_s": round((end["skipped"] - first["skipped"]) / wall, 2),
        "sampled_fps_total": round(sum(c["sampled_fps"] for c in cameras.values()), 1),
        "dropped_in_slots": sum(c["dropped_in_slot"] for c in cameras.values()),
        "reconnects": end["reconnects"] - first["reconnects"],
        "burst_coverage_min": _r(min_coverage),
        "burst_coverage_mean": _r(statistics.fmean(coverages)) if coverages else None,
        "ground_truth": ground_truth,
        "capture_to_detection_p50_s": _r(_percentile(detection_latency, 0.5)),
        "capture_to_detection_p95_s": _r(_percentile(detection_latency, 0.95)),
        **score,
        "per_camera": cameras,
    }


def _verdict_line(result: dict[str, Any]) -> str:
    return (
        f"{'SUSTAINED' if result['sustained'] else 'NOT sustained'} {result['checks']}: cpu"
        f" {result['process_cpu_cores']} cores ({result['cpu_cores_per_camera']} per camera), coverage min"
        f" {result['burst_coverage_min']}, recall {result['recall']} ({result['bursts_alerted']}/"
        f"{result['bursts']}), latency p50 {result['latency_p50_s']} p95 {result['latency_p95_s']} s,"
        f" false alerts {result['false_alerts']}"
    )


# --- the naive loop ----------------------------------------------------------------------------------


NAIVE_PHASE = 0  # people from 1 s into the loop: just after the streams open, early in what it reads


def run_naive(
    count: int, scenes: Sequence[Scene], args: argparse.Namespace, models_dir: Path, delay: float
) -> dict[str, Any]:
    """The naive loop on `count` cameras, all replaying one scene whose burst comes soon after they connect.

    Its cost does not depend on what is on screen (every frame goes through the models), so one scene for
    all does not change the load; it makes the loop reach a burst early even while it falls behind.
    """
    tag = f"[naive {count:>2}]"
    fire = not args.no_fire
    detectors = load_detectors(ModelSettings(dir=models_dir, threads=1, fire_enabled=fire))
    rules = [build_rule(r) for r in bench_rules(fire)]
    site = start_site(count, [scenes[min(NAIVE_PHASE, len(scenes) - 1)]], observer=True)
    clip_dir = Path(tempfile.mkdtemp(prefix="gw-bench-naive-"))
    observer, observed = observe(site, clip_dir)
    urls = {cid: url for cid, url in site.urls.items() if cid != OBSERVER}
    loop = NaiveLoop(urls, detectors, rules, camera_fps=CAMERA_FPS)
    try:
        print(f"{tag} starting {count} cv2.VideoCapture thread(s) ...", flush=True)
        loop.start()
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not all(c.frames for c in loop.cameras.values()):
            errors = {c.camera_id: c.error for c in loop.cameras.values() if c.error}
            if errors or time.monotonic() > deadline:
                raise SystemExit(f"{tag} cameras did not start: {errors or 'timeout'}")
            time.sleep(0.2)
        time.sleep(args.naive_warmup)
        start_at, cpu0, sim0 = time.time(), _process_cpu(), _tree_cpu(site.simulator.pid)
        frames0 = {c.camera_id: c.frames for c in loop.cameras.values()}
        lag0 = {c.camera_id: c.lag_s(start_at) for c in loop.cameras.values()}
        last_at, last_frames = start_at, loop.frames()
        while (elapsed := time.time() - start_at) < args.naive_seconds:
            time.sleep(min(PROGRESS_EVERY_S, args.naive_seconds - elapsed))
            now, frames = time.time(), loop.frames()
            lags = [c.lag_s(now) for c in loop.cameras.values()]
            print(
                f"{tag} {now - start_at:5.1f}/{args.naive_seconds:g} s  processed"
                f" {(frames - last_frames) / (now - last_at):.1f} frames/s ({count} x {CAMERA_FPS:g} fps"
                f" offered)  behind live by up to {max(lags):.1f} s  alerts"
                f" {sum(len(c.alerts) for c in loop.cameras.values())}",
                flush=True,
            )
            last_at, last_frames = now, frames
        end_at, cpu1, sim1 = time.time(), _process_cpu(), _tree_cpu(site.simulator.pid)
        time.sleep(args.grace)
        ground_truth = calibrate(site, observed.samples)  # the observer's delay, for every camera
        if not ground_truth["bursts"]:
            site.delay = delay  # none seen: GridWatch's runs' delay (same simulator, more load)
        del site.scenes[OBSERVER]
        wall = end_at - start_at
        per_camera: dict[str, dict[str, Any]] = {}
        shares = []
        reached: dict[str, list[tuple[float, float]]] = {}
        for camera in loop.cameras.values():
            cid = camera.camera_id
            fps = (camera.frames - frames0[cid]) / wall
            shares.append(min(1.0, fps / CAMERA_FPS))
            newest = camera.earliest_capture(camera.last_stream_s)  # the newest frame it ran, at least
            # Bursts the loop has surely run at least NAIVE_REACH_S of by now, however late.
            reached[cid] = site.bursts(cid, camera.connect_at, newest - NAIVE_REACH_S)
            per_camera[cid] = {
                "processed_fps": round(fps, 2),
                "behind_live_at_start_s": round(lag0[cid], 2),
                "behind_live_at_end_s": round(camera.lag_s(end_at), 2),
                "model_ms_per_frame": round(1000 * camera.busy_s / max(camera.frames, 1), 1),
                "video_processed_s": round(camera.last_stream_s, 1),
                "error": camera.error,
            }
        alerts = [
            RaisedAlert(
                a.camera_id,
                a.label,
                c.captured_at(a.stream_s),
                a.raised_at,
                earliest=c.earliest_capture(a.stream_s),
            )
            for c in loop.cameras.values()
            for a in c.alerts
        ]
        everything = (min(c.connect_at for c in loop.cameras.values()), end_at + args.grace)
        processed = score_alerts(site, alerts, reached, *everything)
        # Latency in real time: alerts of frames captured after the warm-up (start-up backlog excluded).
        live = score_alerts(site, alerts, window_bursts(site, start_at, end_at), start_at, everything[1])
        keeps_up = all(
            p["processed_fps"] >= NAIVE_MIN_FPS_SHARE * CAMERA_FPS
            and p["behind_live_at_end_s"] <= NAIVE_MAX_LAG_S
            for p in per_camera.values()
        )
        recall_ok = live["recall"] is not None and live["recall"] >= args.min_recall
        result = {
            "cameras": count,
            "scene_phase": NAIVE_PHASE,
            "ground_truth": ground_truth | {"delay_s": _r(site.delay)},
            "sustained": keeps_up and recall_ok,
            "checks": {"keeps_up": keeps_up, "recall": recall_ok},
            "seconds": round(wall, 1),
            "process_cpu_cores": round((cpu1 - cpu0) / wall, 3),
            "cpu_cores_per_camera": round((cpu1 - cpu0) / wall / count, 4),
            "simulator_cpu_cores": round((sim1 - sim0) / wall, 3),
            "processed_fps_total": round(sum(p["processed_fps"] for p in per_camera.values()), 2),
            # The share of its cameras' frames the loop keeps up with, summed: "cameras' worth" sustained.
            "camera_equivalents": round(sum(shares), 3),
            # Alerts on the video it did get through (however late): what its recall would be if it kept up.
            "on_processed_video": processed,
            # In real time: bursts that started in the measured window and alerted by its end.
            **live,
            "latency_note": "raised (no bus) minus the latest possible capture time (see naive_loop.py)",
            # How wide the capture-time bracket is (connect + probe time): the latency is at most this larger.
            "capture_bracket_s": {
                c.camera_id: round(c.offset - c.connect_at, 2) for c in loop.cameras.values()
            },
            "per_camera": per_camera,
        }
        print(
            f"{tag} {'SUSTAINED' if result['sustained'] else 'NOT sustained'} {result['checks']}: processed"
            f" {result['processed_fps_total']} of {count * CAMERA_FPS:g} frames/s, cpu"
            f" {result['process_cpu_cores']} cores, recall in real time {live['recall']} ({live['bursts']}"
            f" bursts), on the video it reached {processed['recall']} ({processed['bursts']} bursts),"
            f" latency p50 {processed['latency_p50_s']} p95 {processed['latency_p95_s']} s",
            flush=True,
        )
        return result
    finally:
        loop.stop()
        observer.stop()
        site.stop()  # readers blocked in read() get end of stream
        loop.join(15)
        observer.join(10)
        shutil.rmtree(clip_dir, ignore_errors=True)


# --- the run -----------------------------------------------------------------------------------------


def search(
    counts: Sequence[int], first: int, measure: Callable[[int], dict[str, Any]], keep_going: bool
) -> list[dict[str, Any]]:
    """Measure `first` (or the nearest count), then go up while sustained or down until sustained.

    Finds the largest sustained count of the list when being sustained is monotonic in the count; with
    `keep_going`, measures every count, ascending.
    """
    ordered = sorted(set(counts))
    if keep_going:
        return [measure(count) for count in ordered]
    index = min(range(len(ordered)), key=lambda i: abs(ordered[i] - first))
    results = [measure(ordered[index])]
    step = 1 if results[0]["sustained"] else -1
    while 0 <= index + step < len(ordered):
        index += step
        results.append(measure(ordered[index]))
        if results[-1]["sustained"] != (step == 1):
            break
    return sorted(results, key=lambda r: int(r["cameras"]))


def _counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of camera counts: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("camera counts must be positive")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cameras", type=_counts, default=None, help="GridWatch camera counts to search")
    parser.add_argument("--start", type=int, default=None, help="the count to try first (then up or down)")
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds per camera count")
    parser.add_argument("--warmup", type=float, default=None, help="seconds after all cameras are online")
    parser.add_argument("--naive-cameras", type=_counts, default=None, help="naive loop camera counts")
    parser.add_argument("--naive-seconds", type=float, default=None)
    parser.add_argument("--naive-warmup", type=float, default=5.0)
    parser.add_argument("--grace", type=float, default=3.0, help="seconds to wait for in-flight alerts")
    parser.add_argument("--no-fire", action="store_true", help="fire/smoke model off (both loops)")
    parser.add_argument("--threads", type=int, default=1, help="GridWatch's inference threads per model")
    parser.add_argument(
        "--workers", type=int, default=2, help="GridWatch's parallel model calls (models.inference_workers)"
    )
    parser.add_argument("--min-coverage", type=float, default=0.9, help="share of detect_fps during bursts")
    parser.add_argument("--max-p95", type=float, default=2.0, help="p95 alert latency limit, seconds")
    parser.add_argument("--min-recall", type=float, default=0.9)
    parser.add_argument("--keep-going", action="store_true", help="do not stop at the first failing count")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-ours", action="store_true", help="the naive loop (and FFmpeg) only")
    parser.add_argument("--quick", action="store_true", help="a short check that the script works")
    parser.add_argument("--media-dir", type=Path, default=REPO / ".cache" / "media")
    parser.add_argument("--models-dir", type=Path, default=REPO / ".cache" / "models")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    defaults: dict[str, Any] = (
        {
            "cameras": [2, 4],
            "start": 4,
            "seconds": 40.0,
            "warmup": 10.0,
            "naive_cameras": [1],
            "naive_seconds": 30.0,
        }
        if args.quick
        else {
            "cameras": [2, 4, 8, 12, 16, 24, 32, 48, 64] if args.no_fire else [1, 2, 4, 8, 12, 16, 24, 32],
            "start": 16 if args.no_fire else 8,
            "seconds": 75.0,
            "warmup": 15.0,
            "naive_cameras": [1, 2, 4, 6, 8] if args.no_fire else [1, 2, 4],
            "naive_seconds": 70.0,
        }
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    models_dir = args.models_dir.resolve()
    started = time.time()
    args.load_at_start = [round(v, 2) for v in os.getloadavg()]

    scenes = prepare_scenes(args.media_dir.resolve(), progress=lambda line: print(line, flush=True))
    print(f"ffmpeg -benchmark on {scenes[0].path.name} (3 runs) ...", flush=True)
    ffmpeg = ffmpeg_reference(scenes[0].path)
    cores = os.cpu_count() or 1
    ffmpeg_cameras = cores * ffmpeg["frames_per_cpu_s"] / CAMERA_FPS
    print(f"ffmpeg: {ffmpeg['frames_per_cpu_s']} frames/CPU-s = {ffmpeg_cameras:.0f} cameras", flush=True)

    ours = (
        []
        if args.skip_ours
        else search(
            args.cameras, args.start, lambda n: run_gridwatch(n, scenes, args, models_dir), args.keep_going
        )
    )
    delays = [r["ground_truth"]["delay_s"] for r in ours if r["ground_truth"]["bursts"]]
    delay = statistics.median(delays) if delays else 0.0
    naive: list[dict[str, Any]] = []
    if not args.skip_naive:
        for count in args.naive_cameras:
            naive.append(run_naive(count, scenes, args, models_dir, delay))
            if not naive[-1]["sustained"] and not args.keep_going:
                break

    summary = _summary(args, scenes, ffmpeg, ffmpeg_cameras, cores, naive, ours, started)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")


def _summary(
    args: argparse.Namespace,
    scenes: Sequence[Scene],
    ffmpeg: dict[str, Any],
    ffmpeg_cameras: float,
    cores: int,
    naive: list[dict[str, Any]],
    ours: list[dict[str, Any]],
    started: float,
) -> dict[str, Any]:
    best = max((r for r in ours if r["sustained"]), key=lambda r: r["cameras"], default=None)
    naive_best = max((r for r in naive if r["sustained"]), key=lambda r: r["cameras"], default=None)
    # Below one camera, the naive loop's figure is the share of one camera's frames it keeps up with.
    if naive_best is not None:
        naive_cameras: float | None = float(naive_best["cameras"])
    elif naive:
        naive_cameras = naive[0]["camera_equivalents"]
    else:
        naive_cameras = None
    ours_cameras = best["cameras"] if best is not None else 0
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {cores} cores, Python {platform.python_version()}",
        "cpu": _cpu_description(),
        "load_average_at_start": args.load_at_start,
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "command": "bench/pipeline.py " + " ".join(sys.argv[1:]),
        "run_minutes": round((time.time() - started) / 60, 1),
        "fire_model": not args.no_fire,
        "gridwatch_model_threads": args.threads,
        "gridwatch_inference_workers": args.workers,
        "scenes": [
            {"file": s.path.name, "people_from_s": s.burst_start_s, "to_s": s.burst_end_s, "loop_s": s.loop_s}
            for s in scenes
        ],
        "criteria": {
            "min_burst_coverage": args.min_coverage,
            "max_latency_p95_s": args.max_p95,
            "min_recall": args.min_recall,
            "detect_fps": DETECT_FPS,
            "camera_fps": CAMERA_FPS,
        },
        "ffmpeg": {**ffmpeg, "cameras_at_10_fps": round(ffmpeg_cameras, 1), "cores": cores},
        "naive": naive,
        "ours": ours,
        "result": {
            "ours_cameras_sustained": ours_cameras,
            "ours_cpu_cores_per_camera": best["cpu_cores_per_camera"] if best else None,
            "ours_latency_p50_s": best["latency_p50_s"] if best else None,
            "ours_latency_p95_s": best["latency_p95_s"] if best else None,
            "ours_recall": best["recall"] if best else None,
            "ours_onset_to_alert_p95_s": best["onset_to_alert_p95_s"] if best else None,
            "naive_cameras_sustained": naive_cameras,
            **_naive_figures(naive_best or (naive[0] if naive else None)),
            "naive_cpu_cores_per_camera": _naive_cpu_per_camera(naive, naive_best),
            "ffmpeg_decode_limit_cameras": round(ffmpeg_cameras, 1),
            "ratio_ours_to_naive": round(ours_cameras / naive_cameras, 1) if naive_cameras else None,
            "ratio_ours_to_ffmpeg_limit": round(ours_cameras / ffmpeg_cameras, 3),
            "smallest_count_not_sustained": min(
                (r["cameras"] for r in ours if not r["sustained"] and r["cameras"] > ours_cameras),
                default=None,
            ),
        },
    }


def _naive_figures(run: dict[str, Any] | None) -> dict[str, Any]:
    """The naive run the table quotes: latency in real time if it alerted in time, else on the video it
    reached (late), and how far behind live it ended."""
    if run is None:
        return {}
    late = run["on_processed_video"]
    real_time = run["latency_p50_s"] is not None
    return {
        "naive_cameras_measured": run["cameras"],
        "naive_latency_p50_s": run["latency_p50_s"] if real_time else late["latency_p50_s"],
        "naive_latency_p95_s": run["latency_p95_s"] if real_time else late["latency_p95_s"],
        "naive_latency_is": "real time" if real_time else "on the backlog (no alert in real time)",
        "naive_onset_to_alert_p95_s": run["onset_to_alert_p95_s"] or late["onset_to_alert_p95_s"],
        "naive_recall_real_time": run["recall"],
        "naive_recall_on_processed_video": late["recall"],
        "naive_behind_live_at_end_s": max(c["behind_live_at_end_s"] for c in run["per_camera"].values()),
    }


def _cpu_description() -> str:
    """The CPU model and the vector extensions that decide inference speed."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if "model name" in line), "?")
    flags = next(
        (line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []
    )
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")
    return f"{model} ({', '.join(f for f in wanted if f in flags) or 'no AVX2'})"


def _naive_cpu_per_camera(naive: list[dict[str, Any]], best: dict[str, Any] | None) -> float | None:
    """CPU per camera the naive loop keeps up with (per camera-equivalent below one camera)."""
    if best is not None:
        return float(best["cpu_cores_per_camera"])
    if naive and naive[0]["camera_equivalents"]:
        return round(naive[0]["process_cpu_cores"] / naive[0]["camera_equivalents"], 3)
    return None


if __name__ == "__main__":
    main()
