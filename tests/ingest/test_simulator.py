"""The RTSP camera simulator against a real RTSP client (PyAV over TCP)."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np
import pytest

from ingest.simulator.server import Mount, RtspSimulator, group_members

FILE_SECONDS = 5
FPS = 10
USER, PASSWORD = "admin", "s3cret:/@x"  # characters that need quoting in a URL


@dataclass
class Reading:
    frames: int
    sizes: set[tuple[int, int]]
    seconds: float  # from before av.open to the end of reading


def read(url: str, *, max_frames: int = 10_000, max_seconds: float = 30, read_timeout: float = 5) -> Reading:
    start = time.monotonic()
    frames, sizes = 0, set()
    with av.open(url, options={"rtsp_transport": "tcp"}, timeout=(5, read_timeout)) as container:
        for frame in container.decode(video=0):
            frames += 1
            sizes.add((frame.width, frame.height))
            if frames >= max_frames or time.monotonic() - start > max_seconds:
                break
    return Reading(frames, sizes, time.monotonic() - start)


@pytest.fixture(scope="module")
def small_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 5 s, 320x240, 10 fps H.264 MP4 with a keyframe every second and a moving bar."""
    path = tmp_path_factory.mktemp("media") / "small.mp4"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"preset": "ultrafast", "bf": "0"})
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.codec_context.gop_size = FPS
        for index in range(FILE_SECONDS * FPS):
            image = np.full((240, 320, 3), 60, np.uint8)
            image[:, (index * 6) % 300 : (index * 6) % 300 + 20] = 230
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = index, Fraction(1, FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def simulator(small_mp4: Path) -> Iterator[RtspSimulator]:
    mounts = [
        Mount("pattern", "pattern", width=320, height=240, fps=FPS, gop=FPS),
        Mount("file", "file", path=small_mp4),
        Mount("loop", "file", path=small_mp4, loop=True),
        Mount("secure", "pattern", width=160, height=120, username=USER, password=PASSWORD),
    ]
    with RtspSimulator(mounts) as running:
        yield running


def test_pattern_mount_serves_its_size(simulator: RtspSimulator) -> None:
    reading = read(simulator.url("pattern"), max_frames=20)
    assert reading.frames == 20
    assert reading.sizes == {(320, 240)}


def test_file_mount_replays_whole_file_in_real_time_to_each_client(simulator: RtspSimulator) -> None:
    readings: list[Reading] = []
    url = simulator.url("file")
    clients = [threading.Thread(target=lambda: readings.append(read(url))) for _ in range(2)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(60)
    assert len(readings) == 2
    for reading in readings:  # each client gets its own replay from the start, ending with the file
        assert FILE_SECONDS * FPS - 5 <= reading.frames <= FILE_SECONDS * FPS + 2
        assert reading.sizes == {(320, 240)}
        assert reading.seconds > FILE_SECONDS / 2  # paced, not dumped 100x fast


def test_loop_mount_keeps_going_past_the_end_of_the_file(simulator: RtspSimulator) -> None:
    wanted = FILE_SECONDS * FPS + 25
    reading = read(simulator.url("loop"), max_frames=wanted, max_seconds=40)
    assert reading.frames == wanted
    assert reading.sizes == {(320, 240)}


def test_loop_mount_timestamps_advance_one_frame_at_a_time(simulator: RtspSimulator) -> None:
    """Clips are cut by packet time: a relay whose timestamps run backwards inside a GOP breaks them."""
    times: list[float] = []
    with av.open(simulator.url("loop"), options={"rtsp_transport": "tcp"}, timeout=(5, 5)) as container:
        for packet in container.demux(video=0):
            if packet.pts is not None:
                times.append(float(packet.pts * packet.time_base))
            if len(times) >= FILE_SECONDS * FPS + 20:
                break
    steps = [b - a for a, b in itertools.pairwise(times)]
    assert min(steps) > 0, "timestamps went backwards"
    assert max(steps) < 0.25, f"a gap of {max(steps):.2f} s"


def test_auth_mount_refuses_missing_or_wrong_password(simulator: RtspSimulator) -> None:
    base = simulator.url("secure", with_credentials=False)
    assert USER not in base
    wrong = base.replace("rtsp://", f"rtsp://{USER}:wrong@")
    for url in (base, wrong):
        with pytest.raises(av.error.HTTPUnauthorizedError):
            read(url, max_frames=1)


def test_auth_mount_accepts_the_right_password(simulator: RtspSimulator) -> None:
    url = simulator.url("secure")
    assert f"{USER}:s3cret%3A%2F%40x@" in url
    reading = read(url, max_frames=5)
    assert reading.frames == 5
    assert reading.sizes == {(160, 120)}


def test_unknown_mount_is_not_found(simulator: RtspSimulator) -> None:
    with pytest.raises(av.error.HTTPNotFoundError):
        read(f"rtsp://127.0.0.1:{simulator.port}/nope", max_frames=1)


def test_stop_and_kill_leave_no_processes(small_mp4: Path) -> None:
    simulator = RtspSimulator([Mount("loop", "file", path=small_mp4, loop=True)])
    for paused, end in ((False, simulator.stop), (True, simulator.stop), (False, simulator.kill)):
        simulator.start()
        pgid = simulator.pid
        assert pgid is not None
        assert len(group_members(pgid)) >= 2  # the server and its ffmpeg publisher
        if paused:
            simulator.pause()
        end()
        assert group_members(pgid) == []
        assert simulator.pid is None


def test_killed_server_restarts_on_the_same_port(small_mp4: Path) -> None:
    camera = RtspSimulator([Mount("cam", "file", path=small_mp4, loop=True)])
    camera.start()
    try:
        url = camera.url("cam")
        assert read(url, max_frames=3).frames == 3
        camera.kill()
        camera.start()
        assert camera.url("cam") == url
        assert read(url, max_frames=3).frames == 3
    finally:
        camera.stop()


def test_paused_server_times_out_readers_and_resumes(small_mp4: Path) -> None:
    with RtspSimulator([Mount("pattern", "pattern", width=160, height=120)]) as simulator:
        url = simulator.url("pattern")
        with av.open(url, options={"rtsp_transport": "tcp"}, timeout=(5, 2)) as container:
            frames = container.decode(video=0)
            next(frames)
            simulator.pause()
            with pytest.raises(av.error.ExitError):
                for _ in frames:
                    pass
        simulator.resume()
        assert read(url, max_frames=3).frames == 3


def test_start_fails_clearly_when_the_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        simulator = RtspSimulator([Mount("p", "pattern")], port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match="could not listen"):
            simulator.start()
    assert simulator.pid is None


def test_mount_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="existing path"):
        Mount("cam", "file", path=tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="path segment"):
        Mount("a/b", "pattern")
    with pytest.raises(ValueError, match="both username and password"):
        Mount("cam", "pattern", username="admin")
    with pytest.raises(ValueError, match="unique"):
        RtspSimulator([Mount("cam", "pattern"), Mount("cam", "pattern")])
