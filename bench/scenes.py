"""Mostly-still benchmark scenes: a loop of the empty street with one burst of real people footage.

Each scene (one "phase") is ``LOOP_S`` seconds of the empty street (the per-pixel median of vtest plus light
sensor noise, exactly as ``ingest.simulator.media`` builds ``empty.mp4``) with ``BURST_S`` seconds of real
vtest footage (people walking) cut in at ``burst_start_s``. Phase ``p`` puts its burst at ``1 + p * LOOP_S /
phases`` seconds and takes its people from a different part of vtest, so cameras on different phases see
activity at different times and the detector's load is spread over the loop. Same H.264 parameters as the
test media (768x576, 10 fps, a keyframe every second, no B-frames). Files go to ``MEDIA/bench/``, each with a
recipe stamp; an up-to-date file is not rebuilt.

Ground truth: a camera replaying phase ``p`` from wall time ``t0`` (the moment its looping publisher
started) has people on screen during ``[t0 + burst_start_s + k * LOOP_S, t0 + burst_end_s + k * LOOP_S)``.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Run as a script, bench/ comes first on sys.path, and bench/ingest.py would shadow the `ingest` package.
BENCH = Path(__file__).resolve().parent
sys.path[:] = [str(BENCH.parent), *(p for p in sys.path if Path(p or ".").resolve() != BENCH)]

from ingest.simulator import media  # noqa: E402

LOOP_S = 60
BURST_S = 8
PHASES = 6
VTEST_STRIDE = 120  # phase p takes vtest frames [p * 120, p * 120 + 80): different people in each phase
RECIPE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Scene:
    """One phase's file and when its burst of activity is on screen, in seconds into the loop."""

    phase: int
    path: Path
    loop_s: float
    burst_start_s: float
    burst_end_s: float

    def bursts(self, t0: float, start: float, end: float) -> list[tuple[float, float]]:
        """Wall-time intervals of activity that start in [start, end), for a replay that began at t0."""
        first = int(np.floor((start - t0 - self.burst_start_s) / self.loop_s))
        out = []
        for k in itertools.count(max(first, 0)):
            begin = t0 + self.burst_start_s + k * self.loop_s
            if begin >= end:
                break
            if begin >= start:
                out.append((begin, begin + self.burst_end_s - self.burst_start_s))
        return out


def scene_specs(phases: int = PHASES) -> list[tuple[int, float, int]]:
    """(phase, burst start in s, first vtest frame) for each phase."""
    step = LOOP_S / phases
    if step < BURST_S + 1:
        raise ValueError(f"{phases} phases do not fit {BURST_S} s bursts into a {LOOP_S} s loop")
    return [(p, 1.0 + p * step, (p * VTEST_STRIDE) % (795 - BURST_S * media.FPS)) for p in range(phases)]


def prepare_scenes(
    media_dir: Path, phases: int = PHASES, progress: media.Progress = print, force: bool = False
) -> list[Scene]:
    """Build (or find up to date) ``bench/scene-<p>.mp4`` for each phase under ``media_dir``."""
    out_dir = media_dir / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    scenes: list[Scene] = []
    vtest: Path | None = None
    background: np.ndarray | None = None
    for phase, start_s, vtest_first in scene_specs(phases):
        path = out_dir / f"scene-{phase}-of-{phases}.mp4"
        recipe = _recipe(phase, start_s, vtest_first)
        scene = Scene(phase, path, float(LOOP_S), start_s, start_s + BURST_S)
        scenes.append(scene)
        if not force and media._up_to_date(path, recipe):
            continue
        if vtest is None or background is None:
            sources = media_dir / "sources"
            vtest = media.find_vtest(sources, progress)
            background = media._background(vtest, sources / "background.npy", progress, force=False)
        progress(
            f"scenes: {path.name}: {LOOP_S} s empty street, people from {start_s:g} to "
            f"{start_s + BURST_S:g} s (vtest frames {vtest_first}-{vtest_first + BURST_S * media.FPS - 1})"
        )
        frames = _frames(vtest, background, phase, start_s, vtest_first)
        media._encode(frames, path, recipe, progress, total=LOOP_S * media.FPS)
    return scenes


def _recipe(phase: int, start_s: float, vtest_first: int) -> dict[str, object]:
    return {
        "version": RECIPE_VERSION,
        "media_version": media.RECIPE_VERSION,
        "name": f"bench-scene-{phase}",
        "size": [media.WIDTH, media.HEIGHT],
        "fps": media.FPS,
        "gop": media.GOP,
        "x264": media.X264_OPTIONS,
        "noise_sigma": media.NOISE_SIGMA,
        "median_step": media.MEDIAN_STEP,
        "seed": media.SEED + 100 + phase,
        "loop_s": LOOP_S,
        "burst_s": BURST_S,
        "burst_start_s": start_s,
        "vtest_first_frame": vtest_first,
    }


def _frames(
    vtest: Path, background: np.ndarray, phase: int, start_s: float, vtest_first: int
) -> Iterator[np.ndarray]:
    total = LOOP_S * media.FPS
    burst_first = round(start_s * media.FPS)
    burst_frames = BURST_S * media.FPS
    still = media._noisy(background, total, seed=media.SEED + 100 + phase)
    people = itertools.islice(media._read_frames(vtest), vtest_first, vtest_first + burst_frames)
    for index, empty in enumerate(still):
        if burst_first <= index < burst_first + burst_frames:
            yield next(people)
        else:
            yield empty


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--media-dir", type=Path, default=Path(__file__).resolve().parents[1] / ".cache/media"
    )
    parser.add_argument("--phases", type=int, default=PHASES)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    for scene in prepare_scenes(args.media_dir, args.phases, force=args.force):
        print(f"{scene.path}: people {scene.burst_start_s:g}-{scene.burst_end_s:g} s of {scene.loop_s:g} s")


if __name__ == "__main__":
    main()
