"""Benchmark: what decoding costs the ingest process, full decode vs keyframes only, against FFmpeg itself.

Starts the RTSP simulator with one looping mount of people.mp4 PER CAMERA (each camera its own live stream,
as on a real site; ``--shared-mount`` serves all cameras one shared mount instead) and measures three phases:

1. ``receive``: N undecoded StreamLoops (what a record stream does: RTSP demux and the packet ring only).
2. ``keyframes``: N CameraSources in their idle mode (``keyframes_when_idle=True``, no motion), with a
   thread draining their FrameSlots like a detector: keyframes only.
3. ``full``: ``hold_active()`` on the same sources: every frame decoded.

CPU is this process's (all threads: RTSP demux, decode, BGR conversion of the frames sampled at
detect_fps, Python), from ``resource.getrusage``; the simulator runs in its own processes and is reported
apart. The decode CPU cost per frame is (full-phase CPU - receive-phase CPU) / decoded frames, so it
includes the BGR conversion of the sampled frames (2 per camera-second). The references, on the same file,
run before any camera starts: ``ffmpeg -benchmark -threads 1 -i people.mp4 -f null -`` (Debian FFmpeg) and
a plain single-threaded PyAV decode of the file (the FFmpeg build the pipeline uses). Usage:

    .venv/bin/python bench/ingest.py [--cameras 4] [--seconds 40] [--warmup 6] [--shared-mount]

Progress lines while it runs, a JSON summary at the end. The default run takes about 2.5 minutes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import psutil

# Run as a script, this file's folder comes first on sys.path and this file would shadow the `ingest` package.
REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [
    str(REPO),
    *(p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent),
]

from ingest.frames import FrameSlot  # noqa: E402
from ingest.ring import PacketRing  # noqa: E402
from ingest.simulator.media import prepare_media  # noqa: E402
from ingest.simulator.server import Mount, RtspSimulator  # noqa: E402
from ingest.source import CameraSource, SourceConfig, StreamLoop  # noqa: E402
from ingest.state import StreamState  # noqa: E402

PROGRESS_EVERY_S = 5.0
CONNECT_TIMEOUT_S = 60.0
FFMPEG_RUNS = 3


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float  # monotonic
    cpu_s: float  # this process, user + system, all threads
    sim_cpu_s: float  # the simulator's process group (gst-rtsp-server and its ffmpeg publishers)
    packets: int
    decoded: int
    sampled: int
    reconnects: int


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _tree_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        total = 0.0
        for process in [root, *root.children(recursive=True)]:
            times = process.cpu_times()
            total += times.user + times.system
        return total
    except psutil.Error:
        return 0.0


def _snapshot(loops: list[StreamLoop], simulator: RtspSimulator) -> Snapshot:
    return Snapshot(
        at=time.monotonic(),
        cpu_s=_process_cpu(),
        sim_cpu_s=_tree_cpu(simulator.pid),
        packets=sum(loop.packets for loop in loops),
        decoded=sum(loop.frames_decoded for loop in loops),
        sampled=sum(loop.frames_sampled for loop in loops),
        reconnects=sum(loop.reconnects for loop in loops),
    )


def _rates(start: Snapshot, end: Snapshot) -> dict[str, float]:
    """Rates between two snapshots, unrounded (see `_rounded`)."""
    wall = end.at - start.at
    cpu = end.cpu_s - start.cpu_s
    decoded = end.decoded - start.decoded
    packets = end.packets - start.packets
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_cores": cpu / wall,
        "input_fps": packets / wall,
        "decoded_fps": decoded / wall,
        "sampled_fps": (end.sampled - start.sampled) / wall,
        "decoded_frames_per_cpu_s": decoded / cpu if cpu > 0 else 0.0,
        "cpu_ms_per_decoded_frame": 1000 * cpu / decoded if decoded else 0.0,
        "cpu_ms_per_packet": 1000 * cpu / packets if packets else 0.0,
        "simulator_cpu_cores": (end.sim_cpu_s - start.sim_cpu_s) / wall,
        "reconnects": end.reconnects - start.reconnects,
    }


def _rounded(values: dict[str, float]) -> dict[str, float]:
    def digits(key: str) -> int:
        return 4 if "cores" in key else 3 if ("_ms_" in key or key == "cpu_s") else 1

    return {key: round(value, digits(key)) for key, value in values.items()}


def ffmpeg_reference(path: Path, runs: int = FFMPEG_RUNS) -> dict[str, Any]:
    """FFmpeg's own single-threaded decode speed on `path`: the median of `runs` runs."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SystemExit("ffmpeg not found: install the Debian package 'ffmpeg'")
    version = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True, check=True).stdout
    results: list[tuple[float, float, float, int]] = []
    for _ in range(runs):
        command = [ffmpeg, "-hide_banner", "-nostdin", "-benchmark", "-threads", "1", "-i", str(path)]
        done = subprocess.run([*command, "-f", "null", "-"], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise SystemExit(f"ffmpeg -benchmark failed:\n{done.stderr[-2000:]}")
        bench = re.search(r"bench: utime=([\d.]+)s stime=([\d.]+)s rtime=([\d.]+)s", done.stderr)
        counts = re.findall(r"frame=\s*(\d+)", done.stderr)
        if bench is None or not counts:
            raise SystemExit(f"cannot parse ffmpeg -benchmark output:\n{done.stderr[-2000:]}")
        utime, stime, rtime = (float(value) for value in bench.groups())
        results.append((utime + stime, utime, rtime, int(counts[-1])))
    cpu, utime, rtime, frames = sorted(results)[len(results) // 2]
    return {
        "command": f"ffmpeg -benchmark -threads 1 -i {path.name} -f null -",
        "version": version.split("\n", 1)[0],
        "frames": frames,
        "utime_s": utime,
        "cpu_s": round(cpu, 3),
        "rtime_s": rtime,
        "frames_per_cpu_s": round(frames / cpu, 1),
        "cpu_ms_per_frame": round(1000 * cpu / frames, 3),
    }


def pyav_reference(path: Path) -> dict[str, Any]:
    """A plain single-threaded PyAV decode of `path` (the FFmpeg build the pipeline links), thread CPU."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        started = time.thread_time()
        frames = sum(1 for _ in container.decode(stream))
        cpu = time.thread_time() - started
    return {
        "ffmpeg_version": av.ffmpeg_version_info,
        "frames": frames,
        "cpu_s": round(cpu, 3),
        "frames_per_cpu_s": round(frames / cpu, 1),
        "cpu_ms_per_frame": round(1000 * cpu / frames, 3),
    }


def _drain(slots: list[FrameSlot], stop: threading.Event) -> None:
    """A detector stand-in: take whatever frames wait, touch their pixels."""
    while not stop.is_set():
        for slot in slots:
            frame = slot.take()
            if frame is not None:
                int(frame.image[::64, ::64].sum())
        stop.wait(0.05)


def _wait_online(loops: list[StreamLoop]) -> None:
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while not all(loop.machine.state == StreamState.ONLINE for loop in loops):
        if time.monotonic() > deadline:
            states = {loop.name: str(loop.machine.state) for loop in loops}
            raise SystemExit(f"streams not ONLINE within {CONNECT_TIMEOUT_S:g} s: {states}")
        time.sleep(0.2)


def _phase(
    name: str, loops: list[StreamLoop], simulator: RtspSimulator, warmup: float, seconds: float
) -> dict[str, float]:
    print(f"[{name}] settling {warmup:g} s ...", flush=True)
    time.sleep(warmup)
    start = last = _snapshot(loops, simulator)
    while (elapsed := time.monotonic() - start.at) < seconds:
        time.sleep(min(PROGRESS_EVERY_S, seconds - elapsed))
        now = _snapshot(loops, simulator)
        step = _rates(last, now)
        modes = sorted({str(loop.decode_mode) for loop in loops})
        print(
            f"[{name}] {now.at - start.at:5.1f}/{seconds:g} s  input {step['input_fps']:6.1f} fps  "
            f"decoded {step['decoded_fps']:6.1f} fps  cpu {step['cpu_cores']:.3f} cores  "
            f"({step['decoded_frames_per_cpu_s']:.0f} frames/cpu-s)  mode {'/'.join(modes)}",
            flush=True,
        )
        last = now
    result = _rates(start, _snapshot(loops, simulator))
    print(f"[{name}] done: {json.dumps(_rounded(result))}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=40.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=6.0, help="settling seconds before each phase")
    parser.add_argument("--shared-mount", action="store_true", help="all cameras read one shared mount")
    parser.add_argument("--media-dir", type=Path, default=REPO / ".cache" / "media")
    args = parser.parse_args()
    if args.cameras < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("need --cameras >= 1, --seconds > 0, --warmup >= 0")

    people = prepare_media(args.media_dir, progress=lambda line: print(f"media: {line}", flush=True))[
        "people"
    ]
    print(
        f"reference: ffmpeg -benchmark ({FFMPEG_RUNS} runs) and a PyAV decode of {people.name} ...",
        flush=True,
    )
    ffmpeg = ffmpeg_reference(people)
    pyav = pyav_reference(people)
    print(f"ffmpeg: {json.dumps(ffmpeg)}\npyav:   {json.dumps(pyav)}", flush=True)

    names = ["shared"] if args.shared_mount else [f"cam{index}" for index in range(args.cameras)]
    mounts = [Mount(name, "file", path=people, loop=True) for name in names]
    clip_dir = Path(tempfile.mkdtemp(prefix="gw-bench-ingest-"))
    with RtspSimulator(mounts) as simulator:
        configs = [
            SourceConfig(f"cam{index}", simulator.url(names[index % len(names)]), keyframes_when_idle=True)
            for index in range(args.cameras)
        ]
        print(f"{args.cameras} cameras on {len(mounts)} looping mount(s)", flush=True)

        receivers = [
            StreamLoop(config, config.url, "receive", PacketRing(config.ring_seconds), None, clip_dir, None)
            for config in configs
        ]
        try:
            for loop in receivers:
                loop.start()
            _wait_online(receivers)
            receive = _phase("receive", receivers, simulator, args.warmup, args.seconds)
        finally:
            for loop in receivers:
                loop.stop()
            for loop in receivers:
                loop.join(10)

        slots = [FrameSlot() for _ in configs]
        sources = [CameraSource(config, slot, clip_dir) for config, slot in zip(configs, slots, strict=True)]
        loops = [source.detect for source in sources]
        stop = threading.Event()
        drainer = threading.Thread(target=_drain, args=(slots, stop), name="drain", daemon=True)
        try:
            for source in sources:
                source.start()
            drainer.start()
            _wait_online(loops)
            keyframes = _phase("keyframes", loops, simulator, args.warmup, args.seconds)
            for source in sources:
                source.hold_active(args.warmup + args.seconds + 5)
            full = _phase("full", loops, simulator, args.warmup, args.seconds)
            modes = {source.camera_id: source.detect.decode_mode for source in sources}
        finally:
            for source in sources:
                source.stop()
            for source in sources:
                source.join(10)
            stop.set()
            drainer.join(5)
    shutil.rmtree(clip_dir, ignore_errors=True)

    if set(modes.values()) != {"full"}:
        print(f"warning: not every source decoded in full mode at the end: {modes}", flush=True)
    cores = {name: phase["cpu_cores"] for name, phase in (("r", receive), ("k", keyframes), ("f", full))}
    full_fps, key_fps = full["decoded_fps"], keyframes["decoded_fps"]
    decode_ms = 1000 * (cores["f"] - cores["r"]) / full_fps if full_fps > 0 else float("nan")
    keyframe_ms = 1000 * (cores["k"] - cores["r"]) / key_fps if key_fps > 0 else float("nan")
    nonkey_ms = (
        1000 * (cores["f"] - cores["k"]) / (full_fps - key_fps) if full_fps > key_fps else float("nan")
    )
    receive_ms = 1000 * cores["r"] / receive["input_fps"] if receive["input_fps"] > 0 else float("nan")
    summary = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "command": "bench/ingest.py " + " ".join(sys.argv[1:]),
        "cameras": args.cameras,
        "mounts": "one shared looping mount" if args.shared_mount else "one looping mount per camera",
        "media": f"{people.name} (768x576, 10 fps, GOP 10)",
        "phases": {"receive": _rounded(receive), "keyframes": _rounded(keyframes), "full": _rounded(full)},
        # CPU per camera, in cores, and what it is spent on.
        "cpu_cores_per_camera": {
            "receive_only": round(cores["r"] / args.cameras, 4),
            "keyframes_only": round(cores["k"] / args.cameras, 4),
            "full_decode": round(cores["f"] / args.cameras, 4),
        },
        "receive_cpu_ms_per_packet": round(receive_ms, 3),
        "decode_cpu_ms_per_frame": round(decode_ms, 3),  # (full - receive) / decoded frames, I and P
        "keyframe_decode_cpu_ms": round(keyframe_ms, 3),  # (keyframes - receive) / decoded keyframes
        "nonkey_decode_cpu_ms": round(nonkey_ms, 3),  # (full - keyframes) / extra frames decoded
        "keyframes_only_cpu_saving": round(1 - cores["k"] / cores["f"], 3) if cores["f"] > 0 else None,
        "ffmpeg": ffmpeg,
        "pyav_file_decode": pyav,
        # Our decoded frames per CPU-second (whole process, full decode) / FFmpeg's frames per CPU-second.
        "ratio_vs_ffmpeg": round(full["decoded_frames_per_cpu_s"] / ffmpeg["frames_per_cpu_s"], 3),
        # The same for the decode cost alone (receive cost taken out).
        "decode_only_ratio_vs_ffmpeg": round(ffmpeg["cpu_ms_per_frame"] / decode_ms, 3)
        if decode_ms > 0
        else None,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
