"""probe_camera against the real RTSP simulator, a closed port, a silent server and refused URLs."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from urllib.parse import quote, urlsplit

import av
import numpy as np
import pytest

from ingest import ports
from ingest.probe import ProbeResult, format_probe, probe_camera
from ingest.simulator.server import Mount, RtspSimulator

CANARY = "Canary-p@ss/w0rd%q"  # the wrong password sent to the auth mount; must never show up anywhere
RIGHT_PASSWORD = "right-Pa55:word"
USER = "admin"


def _write_h264(path: Path, *, width: int, height: int, fps: int, gop: int, seconds: float) -> Path:
    """An MP4 of moving H.264 video with a keyframe exactly every `gop` frames and no B-frames."""
    with av.open(str(path), "w") as out:
        options = {"g": str(gop), "keyint_min": str(gop), "bf": "0", "sc_threshold": "0"}
        stream = out.add_stream("libx264", rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        rng = np.random.default_rng(0)
        for i in range(round(seconds * fps)):
            image = np.full((height, width, 3), (i * 5) % 255, np.uint8)
            image[:, (i * 7) % width :] = rng.integers(0, 255, 3, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtspSimulator]:
    media = tmp_path_factory.mktemp("probe-media")
    clip = _write_h264(media / "clip.mp4", width=768, height=576, fps=10, gop=10, seconds=10)
    short = _write_h264(media / "short.mp4", width=320, height=240, fps=10, gop=10, seconds=2)
    mounts = [
        Mount(name="file", kind="file", path=clip),
        Mount(name="short", kind="file", path=short),
        Mount(name="pattern", kind="pattern", width=320, height=240, fps=15, gop=15),
        Mount(name="secured", kind="pattern", width=320, height=240, fps=10, gop=10, username=USER,
              password=RIGHT_PASSWORD),
    ]  # fmt: skip
    with RtspSimulator(mounts) as server:
        yield server


def _with_credentials(url: str, username: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{quote(username, safe='')}:{quote(password, safe='')}@{parts.hostname}:{parts.port}"
    return parts._replace(netloc=netloc).geturl()


def _assert_no_secret(secret: str, *texts: str) -> None:
    for form in {secret, quote(secret, safe=""), quote(secret)}:
        for text in texts:
            assert form not in text


def _free_port() -> int:
    return ports.free_port()


def test_file_mount_reports_codec_size_fps_gop_and_bitrate(simulator: RtspSimulator) -> None:
    result = probe_camera(simulator.url("file"), open_timeout_s=10, read_timeout_s=5, sample_seconds=4)

    assert result.ok, format_probe(result)
    assert (result.error, result.error_kind, result.warnings) == (None, None, ())
    assert result.video_codec == "h264"
    assert (result.width, result.height) == (768, 576)
    assert result.pixel_format == "yuv420p"
    assert result.fps_measured == pytest.approx(10, abs=0.3)
    assert result.fps_declared == pytest.approx(10, abs=0.3)
    assert result.gop_frames == 10
    assert result.gop_seconds == pytest.approx(1.0, abs=0.05)
    assert result.bitrate_kbps is not None and result.bitrate_kbps > 0
    assert result.sampled_seconds is not None and result.sampled_seconds >= 4
    assert result.keyframes >= 4 and result.packets >= 40
    assert (result.audio_codec, result.audio_sample_rate, result.audio_channels) == (None, None, None)
    assert result.elapsed_s < 4 + 5 + 10
    text = format_probe(result)
    assert "768x576" in text and "h264" in text and "10 frames" in text
    assert json.loads(json.dumps(result.to_dict())) == result.to_dict()


def test_pattern_mount_reports_its_configured_size_and_rate(simulator: RtspSimulator) -> None:
    result = probe_camera(simulator.url("pattern"), open_timeout_s=10, read_timeout_s=5, sample_seconds=3)

    assert result.ok, format_probe(result)
    assert result.video_codec == "h264"
    assert (result.width, result.height) == (320, 240)
    assert result.fps_measured == pytest.approx(15, abs=0.5)
    assert result.fps_declared == pytest.approx(15, abs=0.5)
    assert result.gop_frames == 15
    assert result.bitrate_kbps is not None and result.bitrate_kbps > 0


def test_stream_that_ends_early_is_reported_with_a_warning(simulator: RtspSimulator) -> None:
    result = probe_camera(simulator.url("short"), open_timeout_s=10, read_timeout_s=5, sample_seconds=4)

    assert result.ok, format_probe(result)
    assert (result.width, result.height) == (320, 240)
    assert result.sampled_seconds is not None and result.sampled_seconds < 2.5
    assert any("ended" in warning for warning in result.warnings)


def test_stalled_stream_ends_the_sample_after_the_read_timeout() -> None:
    with RtspSimulator([Mount(name="live", kind="pattern", width=320, height=240, fps=10, gop=10)]) as server:
        pause = threading.Timer(4.0, server.pause)
        pause.start()
        started = time.monotonic()
        try:
            result = probe_camera(server.url("live"), open_timeout_s=10, read_timeout_s=2, sample_seconds=30)
        finally:
            pause.cancel()
            server.resume()
        elapsed = time.monotonic() - started

    assert result.ok, format_probe(result)
    assert any("stalled" in warning for warning in result.warnings)
    assert result.packets > 0 and result.fps_measured == pytest.approx(10, abs=0.5)
    # FFmpeg still hands out about 2 s of packets it had buffered before the read timeout starts to count.
    assert elapsed < 4 + 2 + 2 + 5  # 5 s of slack for a loaded machine; the sample asked for was 30 s


def test_closed_port_is_unreachable_within_the_open_timeout() -> None:
    port = _free_port()
    started = time.monotonic()
    result = probe_camera(f"rtsp://127.0.0.1:{port}/cam", open_timeout_s=3, read_timeout_s=3)

    assert time.monotonic() - started < 3 + 3  # not the default 10 s
    assert (result.ok, result.error_kind) == (False, "unreachable"), format_probe(result)
    assert result.error and "refused" in result.error.lower()
    assert result.video_codec is None


def test_server_that_never_answers_is_a_timeout() -> None:
    accepted: list[socket.socket] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.settimeout(10)
        threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
        started = time.monotonic()
        result = probe_camera(f"rtsp://127.0.0.1:{listener.getsockname()[1]}/cam", open_timeout_s=2)
        elapsed = time.monotonic() - started
    for connection in accepted:
        connection.close()

    assert (result.ok, result.error_kind) == (False, "timeout"), format_probe(result)
    assert 1.5 < elapsed < 2 + 3  # the listener would hold it for 10 s


def test_wrong_password_is_auth_failed_and_never_shown(
    simulator: RtspSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = _with_credentials(simulator.url("secured"), USER, CANARY)
    assert quote(CANARY, safe="") in url

    result = probe_camera(url, open_timeout_s=10, read_timeout_s=5)

    assert (result.ok, result.error_kind) == (False, "auth_failed"), format_probe(result)
    assert f"{USER}:***@" in result.url
    dumped = json.dumps(result.to_dict())
    _assert_no_secret(CANARY, dumped, repr(result), format_probe(result), caplog.text)
    assert "401" in dumped


def test_right_password_opens_the_secured_mount_without_showing_it(
    simulator: RtspSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = _with_credentials(simulator.url("secured"), USER, RIGHT_PASSWORD)

    result = probe_camera(url, open_timeout_s=10, read_timeout_s=5, sample_seconds=2)

    assert result.ok, format_probe(result)
    assert (result.width, result.height, result.gop_frames) == (320, 240, 10)
    _assert_no_secret(RIGHT_PASSWORD, json.dumps(result.to_dict()), format_probe(result), caplog.text)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        f"http://{USER}:{quote(CANARY, safe='')}@127.0.0.1:8080/stream",
        "concat:/etc/passwd|/etc/hosts",
        "/etc/passwd",
        "rtsp://169.254.169.254/latest",
    ],
)
def test_refused_urls_are_reported_not_opened(url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    result: ProbeResult = probe_camera(url)

    assert (result.ok, result.error_kind) == (False, "refused_url"), format_probe(result)
    assert result.elapsed_s < 2  # nothing opened: the open timeout is 10 s
    assert result.error
    _assert_no_secret(CANARY, json.dumps(result.to_dict()), format_probe(result), caplog.text)
