"""Recordings that last as long as their event, against the real RTSP simulator (a live 10 fps test pattern
with a keyframe every second): post-roll after the last sighting, continuation clips that tile a long event,
and a reconnect in the middle of a clip."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import pytest

from ingest.clip import ClipResult
from ingest.frames import Frame, FrameSlot
from ingest.simulator.server import Mount, RtspSimulator
from ingest.source import CameraSource, ClipRequest, SourceConfig

FPS = 10
FRAME_S = 1 / FPS
GOP_S = 1.0


@pytest.fixture(scope="module")
def simulator() -> Iterator[RtspSimulator]:
    with RtspSimulator([Mount(name="cam", kind="pattern", width=320, height=240, fps=FPS, gop=FPS)]) as sim:
        yield sim


@dataclass
class Decoded:
    duration_s: float
    frames: int
    first_is_key: bool
    size: tuple[int, int]


def _decode(path: Path) -> Decoded:
    with av.open(str(path)) as clip:
        stream = clip.streams.video[0]
        first = next(p for p in clip.demux(stream) if p.size)
        first_is_key = bool(first.is_keyframe)
    with av.open(str(path)) as clip:
        frames = list(clip.decode(clip.streams.video[0]))
    assert frames, f"{path} has no frames"
    duration = float(frames[-1].time - frames[0].time) + FRAME_S
    return Decoded(duration, len(frames), first_is_key, (frames[0].width, frames[0].height))


class Results:
    def __init__(self) -> None:
        self.items: list[ClipResult] = []
        self._cond = threading.Condition()

    def __call__(self, result: ClipResult) -> None:
        with self._cond:
            self.items.append(result)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float) -> list[ClipResult]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.items) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"only {len(self.items)} of {count} clip results: {self.items}"
                self._cond.wait(left)
            return list(self.items)


def _source(url: str, tmp_path: Path) -> tuple[CameraSource, FrameSlot]:
    slot = FrameSlot()
    config = SourceConfig(
        "cam",
        url,
        detect_fps=2,
        ring_seconds=6,
        keyframes_when_idle=False,  # a frame every 0.5 s, as while an event is followed
        backoff_initial_s=0.5,
        backoff_max_s=1.0,
    )
    source = CameraSource(config, slot, clip_dir=tmp_path)
    source.start()
    return source, slot


def _frame(slot: FrameSlot, timeout: float = 10) -> Frame:
    frame = slot.wait(timeout)
    assert frame is not None, "no frame from the camera"
    return frame


def _warm_up(slot: FrameSlot, seconds: float) -> Frame:
    """Frames for `seconds` of stream time (so the ring holds the pre-roll); the last one."""
    first = _frame(slot)
    frame = first
    while frame.time_s - first.time_s < seconds or frame.connection != first.connection:
        frame = _frame(slot)
    return frame


def _follow(request: ClipRequest, slot: FrameSlot, start: Frame, seconds: float) -> Frame:
    """The event's object is seen on every frame for `seconds` of stream time after `start`."""
    frame = start
    while frame.time_s - start.time_s < seconds:
        frame = _frame(slot)
        request.handle.extend(frame.time_s, frame.connection, frame.captured_at)
    return frame


def test_a_clip_ends_post_roll_after_the_last_sighting(simulator: RtspSimulator, tmp_path: Path) -> None:
    pre, post, event_s = 2.0, 2.0, 6.0  # the event lasts longer than pre-roll plus post-roll
    source, slot = _source(simulator.url("cam"), tmp_path)
    results = Results()
    try:
        alert = _warm_up(slot, 3.0)
        request = ClipRequest(alert.time_s, alert.connection, pre, post, results, alert.captured_at)
        source.request_clip(request)
        last = _follow(request, slot, alert, event_s)
        request.handle.release()  # the event ended with the sighting at `last`
        assert request.handle.wait(post + 10), "the recording did not finish"
        [result] = results.wait_for(1, 1)
    finally:
        source.stop()
        source.join(10)
    assert result.error is None and result.path is not None and result.sequence == 0
    decoded = _decode(result.path)
    expected = (last.time_s - alert.time_s) + pre + post  # start: the keyframe nearest alert - pre-roll
    event = last.time_s - alert.time_s
    print(f"\nclip of a {event:.1f} s event: {decoded.duration_s:.2f} s, expected {expected:.2f}")
    assert decoded.first_is_key and decoded.size == (320, 240)
    assert decoded.duration_s == pytest.approx(expected, abs=GOP_S / 2 + 2 * FRAME_S)
    assert decoded.duration_s > pre + post + 3
    assert result.duration_s == pytest.approx(decoded.duration_s, abs=FRAME_S + 0.01)
    assert result.started_at is not None
    assert result.started_at == pytest.approx(alert.captured_at - pre, abs=GOP_S / 2 + 0.5)


def test_a_long_event_is_cut_into_continuation_clips_that_tile_it(
    simulator: RtspSimulator, tmp_path: Path
) -> None:
    pre, post, event_s, cap = 2.0, 2.0, 15.0, 6.0
    source, slot = _source(simulator.url("cam"), tmp_path)
    results = Results()
    try:
        alert = _warm_up(slot, 3.0)
        request = ClipRequest(alert.time_s, alert.connection, pre, post, results, alert.captured_at, cap)
        source.request_clip(request)
        last = _follow(request, slot, alert, event_s)
        request.handle.release()
        assert request.handle.wait(post + 10)
        clips = sorted(results.items, key=lambda r: r.sequence)
    finally:
        source.stop()
        source.join(10)
    assert all(c.error is None and c.path is not None for c in clips), clips
    assert [c.sequence for c in clips] == list(range(len(clips)))
    assert len(clips) >= 3
    decoded = [_decode(c.path) for c in clips if c.path is not None]
    durations = [d.duration_s for d in decoded]
    print(f"\ncontinuation clips of a {last.time_s - alert.time_s:.1f} s event, cap {cap:g} s: {durations}")
    for clip, d in zip(clips, decoded, strict=True):
        assert d.first_is_key, f"clip {clip.sequence} does not start on a keyframe"
        assert d.duration_s <= cap + FRAME_S / 2
        assert clip.duration_s == pytest.approx(d.duration_s, abs=FRAME_S + 0.01)
    assert all(d.duration_s >= cap - GOP_S - FRAME_S for d in decoded[:-1]), "cut before the cap needed it"
    # tiled: each clip starts with the frame after the previous one's last (one connection: stream times)
    for prev, nxt in itertools.pairwise(clips):
        assert prev.connection == nxt.connection == alert.connection
        assert prev.stream_start_s is not None and nxt.stream_start_s is not None
        assert nxt.stream_start_s - (prev.stream_start_s + prev.duration_s) == pytest.approx(0.0, abs=1e-3)
        assert prev.started_at is not None and nxt.started_at is not None
        assert nxt.started_at - (prev.started_at + prev.duration_s) == pytest.approx(0.0, abs=0.2)
    expected = (last.time_s - alert.time_s) + pre + post
    assert sum(durations) == pytest.approx(expected, abs=GOP_S / 2 + 2 * FRAME_S)


def test_a_reconnect_mid_clip_keeps_what_was_recorded_and_the_event_goes_on(tmp_path: Path) -> None:
    pre, post = 2.0, 2.0
    mount = Mount(name="cam", kind="pattern", width=320, height=240, fps=FPS, gop=FPS)
    simulator = RtspSimulator([mount])
    simulator.start()
    results = Results()
    source, slot = _source(simulator.url("cam"), tmp_path)
    try:
        alert = _warm_up(slot, 3.0)
        request = ClipRequest(alert.time_s, alert.connection, pre, post, results, alert.captured_at)
        source.request_clip(request)
        before = _follow(request, slot, alert, 4.0)
        simulator.kill()  # the camera vanishes mid-clip
        [cut] = results.wait_for(1, 10)
        simulator.start()  # back on the same port: the source reconnects
        after = _frame(slot, 20)
        while after.connection == alert.connection:
            after = _frame(slot, 20)
        last = _follow(request, slot, after, 3.0)  # the object is still there after the reconnect
        request.handle.release()
        assert request.handle.wait(post + 10)
        clips = results.wait_for(2, 1)
    finally:
        source.stop()
        source.join(10)
        simulator.stop()
    assert cut.error is None and cut.path is not None and cut.sequence == 0
    kept = _decode(cut.path)
    recorded = (before.time_s - alert.time_s) + pre  # at least up to the last sighting before the kill
    print(f"\nclip cut by a reconnect: {kept.duration_s:.2f} s kept (>= {recorded:.2f} s recorded)")
    assert kept.first_is_key and kept.duration_s >= recorded - GOP_S / 2 - FRAME_S
    [continuation] = [c for c in clips if c.sequence == 1]
    assert continuation.error is None and continuation.path is not None
    goes_on = _decode(continuation.path)
    assert goes_on.first_is_key
    assert goes_on.duration_s >= (last.time_s - after.time_s) + post - GOP_S / 2
    assert continuation.started_at is not None and cut.started_at is not None
    assert continuation.connection == after.connection != cut.connection
    assert continuation.started_at > cut.started_at + kept.duration_s - 0.5  # later, on the new connection
