"""Benchmark: the demo's three simulated cameras through the whole pipeline for a fixed time.

Reports, per camera, packets/s, decoded fps and frames sampled for detection per second, and for the GridWatch
process the CPU used (all threads, in cores) and the detector's busy time. The RTSP simulator runs in its own
process and is not counted. Usage:

    .venv/bin/python bench/pipeline_demo.py [--seconds 60] [--config configs/demo.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, bench/ comes first on sys.path, and bench/ingest.py would shadow the `ingest` package.
BENCH = Path(__file__).resolve().parent
sys.path[:] = [str(BENCH.parent), *(p for p in sys.path if Path(p or ".").resolve() != BENCH)]

from gridwatch.runtime import Runtime  # noqa: E402
from gridwatch.settings import load_settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    args = parser.parse_args()

    settings = load_settings(args.config)
    data_dir = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    settings = settings.model_copy(
        update={"data_dir": data_dir, "api": settings.api.model_copy(update={"enabled": False})}
    )
    runtime = Runtime(settings).start()
    try:
        print(f"warming up {args.warmup:.0f} s ...", flush=True)
        time.sleep(args.warmup)
        before = {
            cid: (s.detect.packets, s.detect.frames_decoded, s.detect.frames_sampled)
            for cid, s in runtime.sources.items()
        }
        assert runtime.loop is not None
        loop_before = (runtime.loop.stats.frames, runtime.loop.stats.busy_s)
        cpu_before = _cpu_seconds()
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < args.seconds:
            time.sleep(min(5.0, args.seconds - elapsed))
            print(f"  {elapsed:5.0f}/{args.seconds:.0f} s", flush=True)
        wall = time.monotonic() - started
        cpu = _cpu_seconds() - cpu_before
        cameras = {}
        for cid, source in runtime.sources.items():
            p0, d0, s0 = before[cid]
            cameras[cid] = {
                "packets_per_s": round((source.detect.packets - p0) / wall, 2),
                "decoded_fps": round((source.detect.frames_decoded - d0) / wall, 2),
                "sampled_fps": round((source.detect.frames_sampled - s0) / wall, 2),
                "resolution": f"{source.detect.width}x{source.detect.height}",
                "decode_mode_at_end": source.detect.decode_mode,
            }
        frames = runtime.loop.stats.frames - loop_before[0]
        skipped = runtime.loop.stats.skipped_still
        busy = runtime.loop.stats.busy_s - loop_before[1]
        result = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "seconds": round(wall, 1),
            "cameras": cameras,
            "detector_frames_per_s": round(frames / wall, 2),
            "still_frames_skipped_total": skipped,
            "detector_ms_per_frame": round(1000 * busy / max(frames, 1), 1),
            "process_cpu_cores": round(cpu / wall, 3),
            "process_cpu_cores_per_camera": round(cpu / wall / max(len(cameras), 1), 3),
            "alerts": runtime.pipeline.alerts_created if runtime.pipeline else 0,
        }
        print(json.dumps(result, indent=2))
    finally:
        runtime.stop()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
