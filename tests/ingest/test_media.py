"""Test media built offline from Debian opencv-doc's vtest.avi.

Builds into a temporary directory (about 25 s), or into ``$GRIDWATCH_MEDIA_DIR`` when that is set (e.g.
``<repo>/.cache/media``), so repeated runs reuse the files.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

from ingest.simulator.media import FLAMES_START_S, prepare_media

SIZE = (768, 576)
FPS = 10


@dataclass
class Decoded:
    frames: list[np.ndarray]  # grayscale
    keyframe_times: list[float]
    duration_s: float
    rate: float
    pts_equals_dts: bool


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    configured = os.environ.get("GRIDWATCH_MEDIA_DIR")
    media_dir = Path(configured) if configured else tmp_path_factory.mktemp("media")
    return prepare_media(media_dir, progress=lambda line: None)


def decode(path: Path) -> Decoded:
    frames, keyframe_times, pts_equals_dts = [], [], True
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == SIZE
        assert stream.codec_context.pix_fmt == "yuv420p"
        rate = float(stream.average_rate or 0)
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            assert packet.pts is not None and packet.time_base is not None
            pts_equals_dts &= packet.pts == packet.dts
            if packet.is_keyframe:
                keyframe_times.append(round(float(packet.pts * packet.time_base), 3))
            frames.extend(frame.to_ndarray(format="gray") for frame in packet.decode())
        duration_s = float((container.duration or 0) / av.time_base)
    return Decoded(frames, keyframe_times, duration_s, rate, pts_equals_dts)


@pytest.mark.parametrize(("name", "seconds"), [("people", 79.5), ("empty", 20.0), ("flames", 25.0)])
def test_media_file_format(media: dict[str, Path], name: str, seconds: float) -> None:
    path = media[name]
    head = path.read_bytes()[:4096]
    assert b"moov" in head, "faststart: the index comes before the media data"
    decoded = decode(path)
    assert len(decoded.frames) == round(seconds * FPS)
    assert decoded.rate == FPS
    assert decoded.duration_s == pytest.approx(seconds, abs=0.15)
    assert decoded.keyframe_times == [float(second) for second in range(int(np.ceil(seconds)))]
    assert decoded.pts_equals_dts, "no B-frames"


def test_empty_scene_barely_changes(media: dict[str, Path]) -> None:
    frames = [frame.astype(np.int16) for frame in decode(media["empty"]).frames]
    for before, after in itertools.pairwise(frames):
        change = np.abs(after - before)
        assert change.mean() < 2.5
        assert (change > 25).mean() < 0.001  # people walking through vtest change about 2% per frame


def test_people_scene_has_motion(media: dict[str, Path]) -> None:
    frames = [frame.astype(np.int16) for frame in decode(media["people"]).frames[:100]]
    moving = [(np.abs(after - before) > 25).mean() for before, after in itertools.pairwise(frames)]
    assert np.median(moving) > 0.002


def test_flames_start_at_three_seconds(media: dict[str, Path]) -> None:
    empty = decode(media["empty"]).frames
    flames = decode(media["flames"]).frames
    start = round(FLAMES_START_S * FPS)

    def changed(index: int) -> float:
        return float((np.abs(flames[index].astype(np.int16) - empty[index]) > 40).mean())

    assert max(changed(index) for index in range(start)) < 0.001
    assert min(changed(index) for index in range(start + 20, 200, 10)) > 0.01


def test_second_run_does_nothing(media: dict[str, Path]) -> None:
    before = {name: path.stat().st_mtime_ns for name, path in media.items()}
    lines: list[str] = []
    again = prepare_media(media["people"].parent, progress=lines.append)
    assert again == media
    assert {name: path.stat().st_mtime_ns for name, path in again.items()} == before
    assert lines == [f"media: up to date in {media['people'].parent}"]
