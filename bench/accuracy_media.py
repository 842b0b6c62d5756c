"""Build the accuracy-evaluation clips into ``.cache/media/accuracy/`` (offline, idempotent); contact sheets.

Everything is made from offline sources: OpenCV's vtest street (``ingest.simulator.media.find_vtest``), its
empty-street background (the per-pixel temporal median, as for ``empty.mp4``) and the procedural flames of
``ingest.simulator.flames``. scikit-image's ``rocket.jpg`` (real night lights) is not used: scikit-image is
not in the venv, so the night scenes are synthetic (see ``night_frame``). Clips (768x576 unless said, 10 fps,
H.264):

- ``far-<segment>.mp4``: 1920x1080 wide view: the empty-street background tiled 5 x 4 at half scale, and in
  one tile the live vtest segment at half scale, so people are about 50 px tall (small, far objects);
- ``flames-people``, ``flames-small``, ``flames-night``: procedural flames composited onto real frames (vtest
  with people, the empty street with a small far fire, a synthetic night street). ``flames.mp4`` of the demo
  media is used as it is;
- hard negatives for fire/smoke: ``night-lights`` (darkened vtest, street lamps, lit windows and a floodlight
  with sensor noise and lamp flicker), ``headlights`` (the night street with cars' headlights and tail lights
  driving through), ``sunset`` (vtest colour-graded orange/red with a low sun glare), ``red-clothing`` (vtest
  whose moving pixels, the people, are recoloured red and orange).

Each output has a ``<name>.mp4.recipe.json`` stamp; an output whose stamp matches is not rebuilt. Usage:

    .venv/bin/python bench/accuracy_media.py [--force] [--sheets] [--only NAME ...]

``--sheets`` writes the contact sheets used for hand labelling (frames every 1 s of each person segment,
cropped around each zone, zone drawn, stream time written on each) to ``.cache/accuracy/sheets/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

# Run as a script, bench/ comes first on sys.path, and bench/ingest.py would shadow the `ingest` package.
BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:] = [str(REPO), *(p for p in sys.path if Path(p or ".").resolve() != BENCH)]

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from ingest.simulator import flames, media  # noqa: E402

RECIPE_VERSION = 1  # bump when a scene changes: every clip is rebuilt
FPS = 10
W, H = 768, 576
LABELS = BENCH / "labels"
X264 = {"preset": "fast", "crf": "21", "x264-params": "keyint=10:min-keyint=10:scenecut=0:bframes=0"}

# The far view: 5 x 4 tiles of the street at half scale in 1920x1080; the live tile's top-left corner.
FAR_SIZE = (1920, 1080)
FAR_SCALE = 0.5
FAR_ORIGIN = (768, 432)

Progress = Callable[[str], None]


def default_media_dir() -> Path:
    return Path(os.environ.get("GRIDWATCH_MEDIA_DIR", REPO / ".cache" / "media"))


def load_yaml(name: str) -> dict[str, Any]:
    data = yaml.safe_load((LABELS / name).read_text())
    assert isinstance(data, dict)
    return data


# --- sources ---------------------------------------------------------------------------------------------


class Sources:
    """vtest frames and the empty-street background, loaded once."""

    def __init__(self, media_dir: Path, progress: Progress) -> None:
        self.media_dir = media_dir
        self.progress = progress
        self._vtest: list[np.ndarray] | None = None
        self._background: np.ndarray | None = None

    @property
    def vtest(self) -> list[np.ndarray]:
        if self._vtest is None:
            path = media.find_vtest(self.media_dir / "sources", self.progress)
            with av.open(str(path)) as container:
                self._vtest = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
        return self._vtest

    @property
    def background(self) -> np.ndarray:
        if self._background is None:
            cache = self.media_dir / "sources" / "background.npy"
            vtest = media.find_vtest(self.media_dir / "sources", self.progress)
            self._background = media._background(vtest, cache, self.progress, force=False)
        return self._background

    def segment(self, start_s: float, seconds: float) -> Iterator[np.ndarray]:
        first = round(start_s * FPS)
        frames = self.vtest
        for index in range(first, first + round(seconds * FPS)):
            yield frames[min(index, len(frames) - 1)]

    def foreground(self, image: np.ndarray, threshold: int = 30) -> np.ndarray:
        """Soft (0..1, HxWx1) mask of what differs from the empty street: the people, the van."""
        diff = cv2.absdiff(image, self.background).max(axis=2)
        mask = (cv2.GaussianBlur(diff, (5, 5), 0) > threshold).astype(np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
        mask = cv2.dilate(mask, np.ones((3, 3), np.uint8))
        return cv2.GaussianBlur(mask.astype(np.float32), (5, 5), 0)[..., None]


def _noise(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    noisy = image.astype(np.float32) + rng.standard_normal(image.shape, dtype=np.float32) * sigma
    return np.clip(noisy, 0, 255).astype(np.uint8)


# --- scenes ----------------------------------------------------------------------------------------------


def far_frames(src: Sources, start_s: float, seconds: float) -> Iterator[np.ndarray]:
    """The wide view: a tiled street at half scale, one tile live (the vtest segment)."""
    tile_w, tile_h = round(W * FAR_SCALE), round(H * FAR_SCALE)
    tile = cv2.resize(src.background, (tile_w, tile_h), interpolation=cv2.INTER_AREA)
    cols, rows = -(-FAR_SIZE[0] // tile_w), -(-FAR_SIZE[1] // tile_h) + 1
    plate = np.tile(tile, (rows, cols, 1))
    dx, dy = FAR_ORIGIN[0] % tile_w, FAR_ORIGIN[1] % tile_h  # align the tiling with the live tile
    plate = np.roll(plate, (dy, dx), axis=(0, 1))[: FAR_SIZE[1], : FAR_SIZE[0]].copy()
    rng = np.random.default_rng(11)
    x0, y0 = FAR_ORIGIN
    for image in src.segment(start_s, seconds):
        canvas = plate.copy()
        canvas[y0 : y0 + tile_h, x0 : x0 + tile_w] = cv2.resize(
            image, (tile_w, tile_h), interpolation=cv2.INTER_AREA
        )
        yield _noise(rng, canvas, 1.5)


def far_map_point(x: float, y: float) -> tuple[float, float]:
    """A normalised point of the native 768x576 view -> the same point, normalised, in the far view."""
    return (
        (FAR_ORIGIN[0] + x * W * FAR_SCALE) / FAR_SIZE[0],
        (FAR_ORIGIN[1] + y * H * FAR_SCALE) / FAR_SIZE[1],
    )


def far_map_boxes(xyxy: np.ndarray) -> np.ndarray:
    """Pixel boxes of the native view -> pixel boxes of the far view."""
    out = xyxy.astype(np.float32) * FAR_SCALE
    out[:, [0, 2]] += FAR_ORIGIN[0]
    out[:, [1, 3]] += FAR_ORIGIN[1]
    return out


def darken(image: np.ndarray) -> np.ndarray:
    """Day -> night: a fraction of the light, a blue cast, the shadows crushed."""
    night = (image.astype(np.float32) / 255.0) ** 1.6 * np.array([0.30, 0.22, 0.18], np.float32) * 255.0
    return night


def _glow(
    canvas: np.ndarray,
    centre: tuple[float, float],
    radius: float,
    colour: tuple[float, float, float],
    gain: float,
) -> None:
    """Add a light source: a white core with a coloured halo (Gaussian falloff), in place (float32 canvas)."""
    h, w = canvas.shape[:2]
    cx, cy = centre[0] * w, centre[1] * h
    reach = int(radius * 6)
    x0, x1 = max(0, int(cx - reach)), min(w, int(cx + reach) + 1)
    y0, y1 = max(0, int(cy - reach)), min(h, int(cy + reach) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    d2 = ((xs - cx) ** 2 + (ys - cy) ** 2) / (radius**2)
    core = np.exp(-d2 * 2.0)[..., None] * 255.0
    halo = np.exp(-d2 / 6.0)[..., None] * np.array(colour, np.float32)
    canvas[y0:y1, x0:x1] += gain * (core + halo)


# Street lamps (sodium orange) and a white floodlight: (x, y, radius px, BGR colour, flicker amplitude)
LAMPS = [
    (0.545, 0.045, 9.0, (40, 150, 255), 0.04),
    (0.09, 0.06, 7.0, (40, 150, 255), 0.04),
    (0.83, 0.06, 11.0, (230, 240, 255), 0.03),
    (0.965, 0.30, 6.0, (40, 150, 255), 0.12),  # a failing lamp: flickers more
]
WINDOWS = [(0.44 + 0.055 * i, 0.085) for i in range(6)]


def night_frame(base: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
    canvas = darken(base)
    h, w = canvas.shape[:2]
    for i, (x, y, radius, colour, amplitude) in enumerate(LAMPS):
        # Mains lamps shimmer a little (aliased 100 Hz ripple, noise); the failing one more and irregularly.
        flicker = 1.0 + amplitude * (np.sin(2 * np.pi * (0.7 + 0.37 * i) * t + i) + rng.normal(0, 0.5))
        _glow(canvas, (x, y), radius, colour, 0.9 * flicker)
        # The pool of light on the ground below the lamp.
        pool = np.zeros((h, w), np.float32)
        cv2.ellipse(pool, (int(x * w), int(min(0.95, y + 0.35) * h)), (60, 18), 0, 0, 360, 1.0, -1)
        spread = cv2.GaussianBlur(pool, (0, 0), 25)[..., None]
        canvas += spread * np.array(colour, np.float32) * 0.25 * flicker
    for x, y in WINDOWS:
        x0, y0 = int(x * w), int(y * h)
        canvas[y0 : y0 + 22, x0 : x0 + 30] = canvas[y0 : y0 + 22, x0 : x0 + 30] * 0.3 + np.array(
            [60, 150, 210], np.float32
        ) * (0.9 + 0.02 * rng.normal())
    return _noise(rng, np.clip(canvas, 0, 255), 4.0)


def night_frames(src: Sources, start_s: float, seconds: float, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    for index, image in enumerate(src.segment(start_s, seconds)):
        yield night_frame(image, index / FPS, rng)


def headlight_frames(src: Sources, start_s: float, seconds: float, seed: int) -> Iterator[np.ndarray]:
    """The night street with a car driving in every 8 s along the paved area (headlights), and one leaving up
    the road (tail lights)."""
    rng = np.random.default_rng(seed)
    for index, image in enumerate(src.segment(start_s, seconds)):
        t = index / FPS
        frame = night_frame(image, t, rng).astype(np.float32)
        phase = (t % 8.0) / 8.0
        # Incoming car: from the right edge across the plaza towards the camera-left, growing as it nears.
        x, y = 1.05 - 0.8 * phase, 0.42 + 0.18 * phase
        size = 5.0 + 5.0 * phase
        beam = np.zeros(frame.shape[:2], np.float32)
        centre, axes = (int((x - 0.12) * W), int((y + 0.04) * H)), (int(12 * size), int(3 * size))
        cv2.ellipse(beam, centre, axes, 0, 0, 360, 1.0, -1)
        frame += cv2.GaussianBlur(beam, (0, 0), 12)[..., None] * np.array([120, 150, 170], np.float32)
        for dx in (-0.025, 0.025):
            _glow(frame, (x + dx * (0.6 + phase), y), size, (200, 230, 255), 1.0)
        # Outgoing car: tail lights up the road to the top right, shrinking.
        q = ((t + 3.0) % 8.0) / 8.0
        tx, ty = 0.80 + 0.15 * q, 0.32 - 0.18 * q
        for dx in (-0.012, 0.012):
            _glow(frame, (tx + dx * (1.0 - 0.6 * q), ty), 3.0 * (1.0 - 0.5 * q), (20, 20, 230), 0.8)
        yield np.clip(frame, 0, 255).astype(np.uint8)


def sunset_frames(src: Sources, start_s: float, seconds: float, seed: int) -> Iterator[np.ndarray]:
    """vtest graded to a low evening sun: warm orange-red cast, a glare from the top right with a halo and
    lens ghosts that shimmer slightly."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    sun = (0.93 * W, 0.02 * H)
    d = np.hypot(xs - sun[0], ys - sun[1]) / W
    glare = np.exp(-((d / 0.18) ** 2))[..., None] * np.array([150, 210, 255], np.float32)
    halo = np.exp(-((d / 0.55) ** 2))[..., None] * np.array([20, 90, 190], np.float32)
    sky = np.clip(1.0 - ys / (0.45 * H), 0, 1)[..., None] * np.array([0, 40, 110], np.float32)
    ghosts = np.zeros((H, W), np.float32)
    for k, (f, r) in enumerate([(0.35, 22), (0.6, 12), (0.85, 35)]):
        cx, cy = sun[0] + (W / 2 - sun[0]) * 2 * f, sun[1] + (H / 2 - sun[1]) * 2 * f
        cv2.circle(ghosts, (int(cx), int(cy)), r, 0.35 - 0.08 * k, -1)
    ghost_light = cv2.GaussianBlur(ghosts, (0, 0), 4)[..., None] * np.array([90, 160, 255], np.float32)
    grade = np.array([0.55, 0.78, 1.12], np.float32)
    for image in src.segment(start_s, seconds):
        shimmer = 1.0 + 0.03 * rng.normal()
        frame = image.astype(np.float32) * grade + shimmer * (glare + halo + ghost_light) + sky
        yield _noise(rng, np.clip(frame, 0, 255), 1.5)


def red_clothing_frames(src: Sources, start_s: float, seconds: float, seed: int) -> Iterator[np.ndarray]:
    """vtest whose moving pixels (the people, their clothes) are recoloured red to orange by column."""
    rng = np.random.default_rng(seed)
    hue = np.tile(np.linspace(0, 14, W, dtype=np.float32), (H, 1))  # OpenCV hue 0-180: red .. orange
    for image in src.segment(start_s, seconds):
        mask = src.foreground(image)
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(np.float32)
        hsv[..., 0] = hue
        hsv[..., 1] = np.maximum(hsv[..., 1], 210)
        hsv[..., 2] = np.clip(hsv[..., 2] * 0.9 + 100, 0, 255)  # dark clothes too: red, texture kept
        red = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR).astype(np.float32)
        frame = image.astype(np.float32) * (1.0 - mask) + red * mask
        yield _noise(rng, np.clip(frame, 0, 255), 1.0)


def with_flames(
    frames: Iterator[np.ndarray], ignite_s: float, region: tuple[float, float, float, float], seed: int
) -> Iterator[np.ndarray]:
    for index, image in enumerate(frames):
        t = index / FPS
        yield (
            flames.composite_flames(image, t - ignite_s, seed=seed, region=region) if t >= ignite_s else image
        )


def empty_frames(src: Sources, seconds: float, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    for _ in range(round(seconds * FPS)):
        yield _noise(rng, src.background, 1.5)


# --- the clip list ---------------------------------------------------------------------------------------


def clip_builders(src: Sources) -> dict[str, tuple[dict[str, Any], Callable[[], Iterator[np.ndarray]]]]:
    """name -> (recipe, frame generator factory), from bench/labels/fire.yaml and people.yaml."""
    out: dict[str, tuple[dict[str, Any], Callable[[], Iterator[np.ndarray]]]] = {}
    people = load_yaml("people.yaml")
    for segment in people["segments"]:
        if not segment.get("far"):
            continue
        start, end = float(segment["start_s"]), float(segment["end_s"])
        recipe = {"kind": "far", "start_s": start, "end_s": end, "size": FAR_SIZE, "scale": FAR_SCALE,
                  "origin": FAR_ORIGIN}  # fmt: skip

        def far(s: float = start, e: float = end) -> Iterator[np.ndarray]:
            return far_frames(src, s, e - s)

        out[f"far-{segment['id']}"] = (recipe, far)
    scenes: dict[str, Callable[[float, float, int], Iterator[np.ndarray]]] = {
        "vtest": lambda s, n, _seed: src.segment(s, n),
        "empty": lambda _s, n, seed: empty_frames(src, n, seed),
        "night": lambda s, n, seed: night_frames(src, s, n, seed),
        "headlights": lambda s, n, seed: headlight_frames(src, s, n, seed),
        "sunset": lambda s, n, seed: sunset_frames(src, s, n, seed),
        "red-clothing": lambda s, n, seed: red_clothing_frames(src, s, n, seed),
    }
    for clip in load_yaml("fire.yaml")["clips"]:
        build = clip.get("build")
        if build is None:  # an existing demo clip (flames.mp4)
            continue
        scene = scenes[build["scene"]]
        start, seconds, seed = (
            float(build.get("start_s", 0)),
            float(build["seconds"]),
            int(build.get("seed", 0)),
        )
        recipe = {"kind": "fire", **build, "flames_sha256": media._sha256(Path(flames.__file__).read_bytes())}

        def factory(
            scene: Callable[[float, float, int], Iterator[np.ndarray]] = scene,
            start: float = start,
            seconds: float = seconds,
            seed: int = seed,
            build: dict[str, Any] = build,
        ) -> Iterator[np.ndarray]:
            frames = scene(start, seconds, seed)
            if "flames" in build:
                f = build["flames"]
                frames = with_flames(
                    frames, float(f["ignite_s"]), tuple(f["region"]), int(f.get("seed", seed))
                )
            return frames

        out[clip["id"]] = (recipe, factory)
    return out


def prepare(
    media_dir: Path, progress: Progress = print, force: bool = False, only: list[str] | None = None
) -> dict[str, Path]:
    """Build what is missing or stale; returns every clip name -> path."""
    out_dir = media_dir / "accuracy"
    out_dir.mkdir(parents=True, exist_ok=True)
    src = Sources(media_dir, progress)
    paths: dict[str, Path] = {}
    for name, (recipe, factory) in clip_builders(src).items():
        path = out_dir / f"{name}.mp4"
        paths[name] = path
        if only and name not in only:
            continue
        full = {"version": RECIPE_VERSION, "name": name, **recipe}
        full = json.loads(json.dumps(full))
        stamp = path.with_name(path.name + ".recipe.json")
        try:
            fresh = path.is_file() and json.loads(stamp.read_text()) == full
        except (OSError, ValueError):
            fresh = False
        if fresh and not force:
            continue
        progress(f"accuracy media: building {path.name}")
        encode(factory(), path, progress)
        stamp.write_text(json.dumps(full, indent=1, sort_keys=True))
    progress(f"accuracy media: ready in {out_dir}")
    return paths


def encode(frames: Iterator[np.ndarray], out: Path, progress: Progress) -> None:
    partial = out.with_name(out.name + ".part")
    out.with_name(out.name + ".recipe.json").unlink(missing_ok=True)
    count = 0
    with av.open(str(partial), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream: Any = None
        for count, image in enumerate(frames, start=1):
            if stream is None:
                stream = container.add_stream("libx264", rate=FPS, options=dict(X264))
                stream.height, stream.width = image.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.codec_context.max_b_frames = 0
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = count - 1, Fraction(1, FPS)
            container.mux(stream.encode(frame))
            if count % 100 == 0:
                progress(f"accuracy media: {out.name}: {count} frames")
        if stream is not None:
            container.mux(stream.encode(None))
    os.replace(partial, out)
    progress(f"accuracy media: wrote {out} ({count} frames, {out.stat().st_size / 1e6:.1f} MB)")


# --- contact sheets for hand labelling -------------------------------------------------------------------


def contact_sheets(media_dir: Path, out_dir: Path, step_s: float = 1.0, progress: Progress = print) -> None:
    """Per person segment and zone: frames every `step_s` cropped around the zone, zone drawn, time written.
    No detections are drawn: the labels must not come from the detector."""
    out_dir.mkdir(parents=True, exist_ok=True)
    people = load_yaml("people.yaml")
    src = Sources(media_dir, progress)
    for segment in people["segments"]:
        start, end = float(segment["start_s"]), float(segment["end_s"])
        if segment["media"] == "empty.mp4":
            images = list(empty_frames(src, end - start, 0))
        else:
            images = list(src.segment(start, end - start))
        for zone_name, polygon in people["zones"].items():
            pts = np.array([[x * W, y * H] for x, y in polygon], np.float32)
            x0, y0 = np.maximum(pts.min(axis=0) - 40, 0).astype(int)
            x1, y1 = np.minimum(pts.max(axis=0) + np.array([40, 20]), [W, H]).astype(int)
            tiles = []
            for k in range(round((end - start) / step_s)):
                t = k * step_s
                image = images[min(round(t * FPS), len(images) - 1)].copy()
                cv2.polylines(image, [np.round(pts).astype(np.int32)], True, (0, 255, 255), 1, cv2.LINE_AA)
                tile = image[y0:y1, x0:x1]
                scale = 300 / max(tile.shape[1], 1)
                tile = cv2.resize(tile, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
                cv2.rectangle(tile, (0, 0), (64, 18), (0, 0, 0), -1)
                cv2.putText(tile, f"{t:4.1f}s", (2, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
                tiles.append(tile)
            cols = 5
            th, tw = tiles[0].shape[:2]
            sheet = np.zeros((th * -(-len(tiles) // cols), tw * cols, 3), np.uint8)
            for k, tile in enumerate(tiles):
                r, c = divmod(k, cols)
                sheet[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = tile
            path = out_dir / f"{segment['id']}--{zone_name}.png"
            cv2.imwrite(str(path), sheet)
            progress(f"sheet: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--media-dir", type=Path, default=default_media_dir())
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--only", nargs="*", help="build only these clips")
    parser.add_argument("--sheets", action="store_true", help="write the contact sheets for labelling")
    parser.add_argument("--sheet-step", type=float, default=1.0)
    args = parser.parse_args()
    if args.sheets:
        contact_sheets(args.media_dir, REPO / ".cache" / "accuracy" / "sheets", args.sheet_step)
        return
    prepare(args.media_dir, force=args.force, only=args.only)


if __name__ == "__main__":
    main()
