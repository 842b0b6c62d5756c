"""Keyframes only while nothing moves; full decode within one GOP once motion starts; back after the hold."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from ingest.frames import FrameSlot
from ingest.simulator.server import Mount, RtspSimulator
from ingest.source import CameraSource, SourceConfig

FPS, GOP = 10, 10


@pytest.fixture(scope="module")
def simulator() -> Iterator[RtspSimulator]:
    with RtspSimulator([Mount(name="live", kind="pattern", width=320, height=240, fps=FPS, gop=GOP)]) as sim:
        yield sim


def _wait(predicate, timeout: float) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"not reached within {timeout} s")


def test_decode_follows_motion(simulator: RtspSimulator) -> None:
    moving = threading.Event()

    def motion(_image: np.ndarray) -> bool:
        return moving.is_set()

    slot = FrameSlot()
    config = SourceConfig(
        "cam",
        simulator.url("live"),
        detect_fps=FPS,
        active_hold_s=2.0,
        idle_keyframe_interval_s=0,
        wake_ratio=0,
    )
    source = CameraSource(config, slot, motion=motion)
    source.start()
    loop = source.detect
    try:
        _wait(lambda: loop.packets >= 3 * GOP, 30)
        assert loop.decode_mode == "keyframes"
        decoded, packets = loop.frames_decoded, loop.packets
        time.sleep(3)
        idle_ratio = (loop.frames_decoded - decoded) / (loop.packets - packets)
        assert idle_ratio <= 1.5 / GOP, f"decoded {idle_ratio:.2f} of frames while idle"

        moving.set()  # seen on the next decoded (key)frame, then full decode from the ring at once
        switch_s = _wait(lambda: loop.decode_mode == "full", 5)
        assert switch_s <= GOP / FPS + 1.0, f"switched after {switch_s:.1f} s"
        decoded, packets = loop.frames_decoded, loop.packets
        time.sleep(3)
        assert (loop.frames_decoded - decoded) / (loop.packets - packets) >= 0.9

        moving.clear()
        _wait(lambda: loop.decode_mode == "keyframes", config.active_hold_s + 3)
        assert source.health()["detect"].decode_mode == "keyframes"
    finally:
        source.stop()
        source.join(10)
