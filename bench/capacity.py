"""The capacity a `gridwatch worker` would measure at start on this machine: the models of a config timed
on full batches of HD frames, as the worker's calibration does (`DetectorLoop.seconds_per_frame`), and the
cameras that gives at a few detection rates (`CapacityMeter`, `worker.target_load`). That is the worst case,
every frame run; at run time the worker measures its real load (motion-gated cameras cost less) and adapts.

    .venv/bin/python bench/capacity.py [CONFIG] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

# Run as a script, bench/ comes first on sys.path, and bench/ingest.py would shadow the `ingest` package.
BENCH = Path(__file__).resolve().parent
sys.path[:] = [str(BENCH.parent), *(p for p in sys.path if Path(p or ".").resolve() != BENCH)]

from detect.loop import DetectorLoop  # noqa: E402
from gridwatch.cluster.capacity import CapacityMeter, available_cores  # noqa: E402
from gridwatch.models import load_detectors  # noqa: E402
from gridwatch.settings import Settings, load_settings  # noqa: E402

RATES = (1.0, 2.0, 5.0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", type=Path, nargs="?", help="a GridWatch config (default: the defaults)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calibrations (each: 3 batches)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = load_settings(args.config)
    m, w = settings.models, settings.worker
    print(f"loading models from {m.dir} (fire {'on' if m.fire_enabled else 'off'}, batch {m.batch_size}, "
          f"{m.inference_workers} inference workers)", flush=True)  # fmt: skip
    loop = DetectorLoop({}, load_detectors(m), lambda *_: None, max_batch=m.batch_size,
                        workers=m.inference_workers)  # fmt: skip
    image = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    times = []
    for i in range(args.repeats):
        times.append(loop.seconds_per_frame(image))
        print(f"  calibration {i + 1}/{args.repeats}: {times[-1] * 1000:.1f} ms per frame", flush=True)
    seconds = statistics.median(times)
    result = {
        "ms_per_frame_median": round(seconds * 1000, 2),
        "ms_per_frame_range": [round(min(times) * 1000, 2), round(max(times) * 1000, 2)],
        "cores": available_cores(),
        "target_load": w.target_load,
        "maximum": w.capacity,
        "expected_activity": w.expected_activity,
        "capacity_at_fps": {
            str(fps): _capacity(settings, seconds, fps, w.expected_activity) for fps in RATES
        },
        "worst_case_capacity_at_fps": {str(fps): _capacity(settings, seconds, fps, 1.0) for fps in RATES},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"models: {result['ms_per_frame_median']} ms per frame (median; {result['ms_per_frame_range']}), "
          f"{result['cores']:g} cores")  # fmt: skip
    worst = result["worst_case_capacity_at_fps"]
    for fps, capacity in result["capacity_at_fps"].items():
        print(f"  at {fps} frames/s per camera: capacity {capacity} cameras with something moving "
              f"{w.expected_activity:.0%} of the time, {worst[fps]} if every frame ran (target load "
              f"{w.target_load:g}, at most {w.capacity})")  # fmt: skip


def _capacity(settings: Settings, seconds: float, fps: float, activity: float) -> int:
    w = settings.worker
    cost = CapacityMeter.calibrated(seconds, fps, activity, settings.models.still_refresh_s)
    return CapacityMeter(w.capacity, target_load=w.target_load, calibrated_cost=cost).capacity


if __name__ == "__main__":
    main()
