"""An idle camera decodes a keyframe only every `idle_keyframe_interval_s`, and wakes to full decode as soon
as its P-frames grow (the compressed stream's own motion cue), before the next keyframe is due."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ingest.frames import Frame, FrameSlot
from ingest.simulator import media as media_module
from ingest.simulator.server import Mount, RtspSimulator
from ingest.source import CameraSource, SourceConfig
from ingest.wake import PacketSizeWake

STILL_S, PEOPLE_S = 5, 4  # the clip: an empty street, then people walking in


def test_the_wake_needs_two_of_three_large_packets_over_a_still_baseline() -> None:
    wake = PacketSizeWake(ratio=3.0, min_extra_bytes=600, warmup_packets=10)
    assert not any(wake.observe(1100 + i) for i in range(10))  # warm-up: learns the still size
    assert wake.baseline == pytest.approx(1104.5)
    assert not wake.observe(9000)  # one large packet alone (an encoder hiccup) is not motion
    assert not wake.observe(1150)
    assert not wake.observe(1120)
    assert not wake.observe(9000)
    assert wake.observe(8500)  # two of the last three: motion
    assert wake.wakes == 1
    assert not wake.observe(3000)  # 2.7x: under the ratio


def test_small_packets_never_wake_however_their_ratio() -> None:
    wake = PacketSizeWake(ratio=3.0, min_extra_bytes=600, warmup_packets=10)
    for _ in range(10):
        wake.observe(100)
    assert not any(wake.observe(500) for _ in range(5))  # 5x, but only 400 bytes more


def test_the_ratio_must_be_above_one() -> None:
    with pytest.raises(ValueError, match="above 1"):
        PacketSizeWake(ratio=1.0)


@pytest.fixture(scope="module")
def still_then_people(media: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """STILL_S s of the empty (noisy) street, then PEOPLE_S s of vtest people: keyframes every second."""
    fps = media_module.FPS
    empty = itertools.islice(media_module._read_frames(media["empty"]), STILL_S * fps)
    people = itertools.islice(media_module._read_frames(media["people"]), PEOPLE_S * fps)
    out = tmp_path_factory.mktemp("wake") / "still-then-people.mp4"
    media_module._encode(itertools.chain(empty, people), out, {}, lambda _line: None, None)
    return out


@pytest.fixture(scope="module")
def simulator(still_then_people: Path) -> Iterator[RtspSimulator]:
    mounts = [
        Mount(name="clip", kind="file", path=still_then_people),
        Mount(name="live", kind="pattern", width=320, height=240, fps=10, gop=10),
    ]
    with RtspSimulator(mounts) as sim:
        yield sim


def _drain(slot: FrameSlot, into: list[Frame], stop: threading.Event) -> None:
    while not stop.is_set():
        frame = slot.take()
        if frame is not None:
            into.append(frame)
        time.sleep(0.01)


def _run(config: SourceConfig, seconds: float) -> tuple[CameraSource, list[Frame]]:
    slot, frames, stop = FrameSlot(), [], threading.Event()
    source = CameraSource(config, slot, motion=lambda _image: False)  # the pixel gate never sees motion
    drainer = threading.Thread(target=_drain, args=(slot, frames, stop), daemon=True)
    source.start()
    drainer.start()
    try:
        time.sleep(seconds)
    finally:
        source.stop()
        source.join(10)
        stop.set()
        drainer.join(5)
    return source, frames


def test_an_idle_camera_decodes_every_second_keyframe(simulator: RtspSimulator) -> None:
    config = SourceConfig("cam", simulator.url("live"), detect_fps=2, idle_keyframe_interval_s=2.0)
    source, frames = _run(config, 7)
    health = source.health()["detect"]
    assert health.decode_mode == "keyframes"
    assert health.keyframes_skipped >= 2
    times = [f.time_s for f in frames]
    gaps = np.diff(times)
    assert len(times) >= 3 and np.all(gaps >= 1.9), f"sampled at {times}"


def test_growing_p_frames_wake_full_decode_before_the_next_keyframe(simulator: RtspSimulator) -> None:
    config = SourceConfig(
        "cam", simulator.url("clip"), detect_fps=10, idle_keyframe_interval_s=2.0, wake_hold_s=2.0
    )
    source, frames = _run(config, STILL_S + PEOPLE_S + 2)
    times = [round(f.time_s, 2) for f in frames]
    # Stream time starts at the first packet received, not always the file's first frame: find where the
    # file's keyframes (every whole second) fall.
    offset = times[0] - round(times[0])
    cut = STILL_S + offset  # people come in here
    still = [t for t in times if t < cut - 0.05]
    assert len(still) >= 2 and np.all(np.diff(still) >= 1.9), f"the still street woke the decoder: {still}"
    woken = [t for t in times if cut + 0.05 < t < cut + 1]
    # Without the wake, no frame between the cut (itself a keyframe) and the next keyframe is decoded.
    assert woken and woken[0] <= cut + 0.5, f"frames sampled after people came in at {cut:.1f} s: {times}"
    assert source.detect.bitstream_wakes >= 1
    assert len(woken) >= 5, "full decode did not continue through the wake hold"
