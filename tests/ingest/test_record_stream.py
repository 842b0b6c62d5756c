"""Main stream and sub-stream: detection decodes the sub-stream, clips come from the main stream undecoded."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest

from ingest.clip import ClipResult
from ingest.frames import FrameSlot
from ingest.simulator.server import Mount, RtspSimulator
from ingest.source import CameraSource, ClipRequest, SourceConfig


@pytest.fixture(scope="module")
def simulator(media: dict[str, Path]) -> Iterator[RtspSimulator]:
    sim = RtspSimulator(
        [
            Mount(name="sub", kind="pattern", width=320, height=240, fps=10, gop=10),
            Mount(name="main", kind="file", path=media["people"], loop=True),
        ]
    )
    with sim:
        yield sim


def _wait(predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached")


def test_clip_comes_from_the_record_stream(simulator: RtspSimulator, tmp_path: Path) -> None:
    slot = FrameSlot()
    source = CameraSource(
        SourceConfig(
            "cam", simulator.url("sub"), record_url=simulator.url("main"), detect_fps=2, ring_seconds=6
        ),
        slot,
        clip_dir=tmp_path,
    )
    source.start()
    try:
        _wait(lambda: source.record is not None and source.record.packets > 60, 30)
        frame = slot.wait(10)
        assert frame is not None and frame.image.shape == (240, 320, 3)  # detection sees the sub-stream
        done = threading.Event()
        results: list[ClipResult] = []

        def finished(result: ClipResult) -> None:
            results.append(result)
            done.set()

        source.request_clip(
            ClipRequest(
                time_s=frame.time_s,
                connection=frame.connection,
                pre_roll_s=2.0,
                post_roll_s=2.0,
                on_done=finished,
                wall_time=time.time(),
            )
        )
        assert done.wait(20)
        health = source.health()
    finally:
        source.stop()
        source.join(10)
    [result] = results
    assert result.error is None and result.path is not None
    with av.open(str(result.path)) as clip:
        stream = clip.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (768, 576)  # the main stream
        frames = list(clip.decode(stream))
    assert 3.0 <= result.duration_s <= 5.5
    assert len(frames) >= 30
    assert health["record"].decode_mode is None and health["record"].frames_decoded == 0
    assert health["detect"].width == 320
