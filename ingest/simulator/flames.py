"""Procedural flames (and a little smoke) composited onto real frames, for fire-detection tests and demos.

No fire footage ships in any package we can install, so fire clips are made by drawing flames onto real
camera frames. The flames are built from fractal value noise scrolled upwards (so tongues rise and flicker),
shaped by a few flickering "tongue" envelopes rising from the base of the region, coloured by a
black-body-like palette (white-yellow core, orange body, red edges), blended additively with a soft glow and
a warm light cast on the scene. They grow over the first seconds. Deterministic for a given
(seed, t, frame size, region).
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

GROW_SECONDS = 4.0
RISE_SPEED = 0.9  # noise scroll speed, region heights per second
TONGUES = 5

# Palette stops: intensity -> BGR colour.
_STOPS = np.array([0.0, 0.18, 0.38, 0.58, 0.78, 0.92, 1.0], np.float32)
_COLOURS = np.array(
    [
        [0, 0, 40],
        [10, 20, 170],
        [10, 70, 235],
        [30, 150, 255],
        [90, 220, 255],
        [190, 245, 255],
        [245, 255, 255],
    ],
    np.float32,
)


def composite_flames(
    frame_bgr: np.ndarray,
    t: float,
    *,
    seed: int = 0,
    region: tuple[float, float, float, float] = (0.55, 0.45, 0.85, 0.95),
    smoke: bool = True,
) -> np.ndarray:
    """A copy of `frame_bgr` with flames burning in `region` (normalised x0, y0, x1, y1) at time t seconds."""
    fh, fw = frame_bgr.shape[:2]
    x0, y0 = round(region[0] * fw), round(region[1] * fh)
    x1, y1 = round(region[2] * fw), round(region[3] * fh)
    x0, x1 = max(0, min(x0, x1)), min(fw, max(x0, x1))
    y0, y1 = max(0, min(y0, y1)), min(fh, max(y0, y1))
    h, w = y1 - y0, x1 - x0
    out = frame_bgr.copy()
    if h < 8 or w < 8:
        return out
    intensity = _flame_intensity(h, w, t, seed)
    colour = _palette(intensity)
    alpha = np.clip((intensity - 0.06) / 0.25, 0.0, 1.0)[..., None]

    # Work on a padded window so the glow and the light cast spill outside the flame box.
    pad = max(h, w) // 3
    wx0, wy0 = max(0, x0 - pad), max(0, y0 - pad)
    wx1, wy1 = min(fw, x1 + pad), min(fh, y1 + pad // 3)
    window: np.ndarray = out[wy0:wy1, wx0:wx1].astype(np.float32)
    layer = np.zeros_like(window)
    layer_alpha = np.zeros((*window.shape[:2], 1), np.float32)
    sl = (slice(y0 - wy0, y1 - wy0), slice(x0 - wx0, x1 - wx0))
    layer[sl] = colour
    layer_alpha[sl] = alpha

    if smoke:
        window = _smoke(window, sl, h, w, t, seed)
    # Warm light cast on the surroundings, then the flame itself, then an additive glow.
    premultiplied = layer * layer_alpha
    light = _wide_blur(premultiplied, max(2.0, pad / 2.0))
    window = window * (1.0 + 0.004 * light) + 0.25 * light
    window = window * (1.0 - layer_alpha) + layer * layer_alpha
    glow = _wide_blur(premultiplied, max(1.5, w / 40.0))
    window = window + 0.35 * glow
    out[wy0:wy1, wx0:wx1] = np.clip(window, 0, 255).astype(np.uint8)
    return out


def _wide_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; large sigmas run on a downscaled copy (same look, a fraction of the cost)."""
    factor = int(sigma // 3)
    if factor < 2:
        return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma)
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=sigma / factor)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).reshape(image.shape)


def _flame_intensity(h: int, w: int, t: float, seed: int) -> np.ndarray:
    """(h, w) float32 in [0, 1]: 0 outside the flames, 1 in the white-hot core."""
    rng = np.random.default_rng(seed)
    growth = 1.0 - 0.75 * np.exp(-max(t, 0.0) / GROW_SECONDS * 2.0)
    v = np.linspace(1.0, 0.0, h, dtype=np.float32)[:, None]  # height above the base, 0 at the bottom
    u = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]

    turbulence = _scrolled_noise(h, w, t, seed)
    sway = _scrolled_noise(h, w, t * 0.7, seed + 101) - 0.5
    uw = u + sway * 0.22 * (0.2 + v)

    # Flickering tongues: Gaussian envelopes whose height and width wobble in time.
    envelope = np.zeros((1, w), np.float32) + np.zeros((h, 1), np.float32)
    centres = rng.uniform(0.2, 0.8, TONGUES)
    heights = rng.uniform(0.45, 1.0, TONGUES)
    widths = rng.uniform(0.08, 0.18, TONGUES)
    freqs = rng.uniform(1.5, 4.0, TONGUES)
    phases = rng.uniform(0, 2 * np.pi, TONGUES)
    spread = 0.35 + 0.65 * growth  # the fire widens as it grows
    for c, hh, ww, f, ph in zip(centres, heights, widths, freqs, phases, strict=True):
        cc = 0.5 + (c - 0.5) * spread
        hf = hh * (0.8 + 0.2 * np.sin(2 * np.pi * f * t + ph))
        envelope = np.maximum(envelope, hf * np.exp(-(((uw - cc) / (ww * spread)) ** 2)))
    envelope *= growth

    # Intensity falls off with height relative to the local envelope; noise tears the upper part into tongues.
    rel = v / np.maximum(envelope, 1e-3)
    base = np.clip(1.0 - rel, 0.0, 1.0)
    reach = np.clip(1.7 - rel, 0.0, 1.0)  # no detached blobs far above the tongues
    noisy = base + (turbulence - 0.5) * (0.35 + 0.9 * v) * reach - 0.15 * v
    core = np.exp(-((rel / 0.35) ** 2)) * (envelope > 0.15)
    intensity = np.clip(noisy * 1.1 + 0.15 * core, 0.0, 1.0)
    intensity[envelope < 0.02] = 0.0
    return cv2.GaussianBlur(intensity.astype(np.float32), (0, 0), sigmaX=max(0.6, w / 200.0))


def _scrolled_noise(h: int, w: int, t: float, seed: int) -> np.ndarray:
    """Fractal noise in [0, 1] scrolling upwards with time (a tall periodic texture read through a window)."""
    texture = _noise_texture(2 * h, w, seed)
    offset = int(RISE_SPEED * t * h) % (2 * h)
    rows = (np.arange(h) + offset) % (2 * h)
    return texture[rows]


@lru_cache(maxsize=32)
def _noise_texture(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 7919)
    acc = np.zeros((h, w), np.float32)
    total = 0.0
    for octave, amp in enumerate((1.0, 0.55, 0.3, 0.15)):
        cells_x = 3 * 2**octave
        cells_y = max(2, int(cells_x * h / max(w, 1) * 0.6))
        grid = rng.random((cells_y, cells_x)).astype(np.float32)
        # Periodic vertically so the scroll wraps without a seam.
        grid = np.vstack([grid, grid[:1]])
        layer = cv2.resize(grid, (w, h + h // cells_y), interpolation=cv2.INTER_CUBIC)[:h]
        acc += amp * layer
        total += amp
    acc /= total
    acc -= acc.min()
    acc /= max(float(acc.max()), 1e-6)
    acc.setflags(write=False)
    return acc


def _palette(intensity: np.ndarray) -> np.ndarray:
    flat = intensity.reshape(-1)
    channels = [np.interp(flat, _STOPS, _COLOURS[:, c]) for c in range(3)]
    return np.stack(channels, axis=1).reshape((*intensity.shape, 3)).astype(np.float32)


def _smoke(window: np.ndarray, flame: tuple[slice, slice], h: int, w: int, t: float, seed: int) -> np.ndarray:
    """Grey translucent plume above the flames, thickening as the fire grows."""
    ys, xs = flame
    top = max(0, ys.start - h)
    sh = ys.start + h // 3 - top
    if sh < 8:
        return window
    noise = _scrolled_noise(sh, w, t * 0.4, seed + 33)
    v = np.linspace(1.0, 0.0, sh, dtype=np.float32)[:, None]
    u = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
    plume = np.exp(-((u / (0.35 + 0.5 * v)) ** 2)) * (1.0 - v) ** 0.5
    growth = 1.0 - np.exp(-max(t, 0.0) / GROW_SECONDS)
    density = np.clip(plume * (noise * 1.2 - 0.15) * 0.55 * growth, 0.0, 0.6)[..., None]
    grey = np.array([120, 122, 125], np.float32)
    region = window[top : top + sh, xs]
    window[top : top + sh, xs] = region * (1.0 - density) + grey * density
    return window
