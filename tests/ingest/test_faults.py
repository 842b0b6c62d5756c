"""CameraSource under faults, against the real RTSP simulator and small fake servers on loopback.

Each test records the state changes through `on_state` (with the monotonic time they arrived) and checks the
behaviour bounds of the ingest issue: how fast a fault is noticed, that the source recovers, and that a
password never leaks. Nothing here sends traffic to a non-loopback address.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from urllib.parse import quote, urlsplit

import av
import av.logging
import numpy as np
import pytest

from ingest import ports
from ingest.frames import FrameSlot
from ingest.simulator.server import Mount, RtspSimulator
from ingest.source import CameraSource, SourceConfig
from ingest.state import StateChange, StreamState

S = StreamState
USER = "admin"
CANARY = "Canary-p@ss/w0rd%q"  # the WRONG password sent to the auth mount; must never show up anywhere
RIGHT_PASSWORD = "Right-p@ss/w0rd%r"  # the right one: also a secret, checked on the crash path
FPS = 10
SLACK_S = 1.0  # scheduling slack on a busy 2-core machine, on top of every bound the issue sets


# -- helpers --------------------------------------------------------------------------------------------


class Recorder:
    """`on_state` callback that keeps every StateChange with the monotonic time it arrived."""

    def __init__(self) -> None:
        self.changes: list[tuple[float, StateChange]] = []
        self._cond = threading.Condition()

    def __call__(self, change: StateChange) -> None:
        with self._cond:
            self.changes.append((time.monotonic(), change))
            self._cond.notify_all()

    def wait_for(
        self, state: StreamState, *, after: float = 0.0, timeout: float
    ) -> tuple[float, StateChange]:
        """The first change into `state` that arrived at or after `after` (monotonic)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for at, change in self.changes:
                    if at >= after and change.new == state:
                        return at, change
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no change to {state} within {timeout} s; saw {self.summary()}")
                self._cond.wait(left)

    def states(self, since: float, until: float = float("inf")) -> list[StreamState]:
        with self._cond:
            return [change.new for at, change in self.changes if since <= at <= until]

    def summary(self) -> list[tuple[str, str | None]]:
        with self._cond:
            return [(str(change.new), change.reason) for _, change in self.changes]


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> float:
    """Poll `predicate`; return the monotonic time it first held, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def make_config(url: str, camera_id: str = "cam", **overrides: float | bool) -> SourceConfig:
    """Short timeouts and backoff so faults play out in seconds."""
    values: dict[str, float | bool] = {
        "detect_fps": 2.0,
        "open_timeout_s": 4.0,
        "read_timeout_s": 3.0,
        "stall_after_s": 1.5,
        "watchdog_timeout_s": 6.0,
        "backoff_initial_s": 0.5,
        "backoff_max_s": 1.0,
        "auth_backoff_s": 2.5,
    }
    values.update(overrides)
    return SourceConfig(camera_id=camera_id, url=url, **values)  # type: ignore[arg-type]


def max_backoff(config: SourceConfig) -> float:
    return config.backoff_max_s * 1.2  # the loop jitters its delay by up to +20 %


@contextlib.contextmanager
def running(
    config: SourceConfig, motion: Callable[[np.ndarray], bool] | None = None, stop_within_s: float = 8.0
) -> Iterator[tuple[CameraSource, Recorder]]:
    """A started CameraSource that is stopped (and must stop promptly) when the block ends."""
    recorder = Recorder()
    source = CameraSource(config, FrameSlot(), on_state=recorder, motion=motion)
    source.start()
    try:
        yield source, recorder
    finally:
        source.stop()
        source.join(stop_within_s)
        assert not source.is_alive(), f"camera {config.camera_id} did not stop within {stop_within_s} s"
    assert source.state == S.STOPPED


def free_port() -> int:
    return ports.free_port()


def write_h264(path: Path, *, seconds: float, width: int = 320, height: int = 240) -> Path:
    """An MP4 of moving H.264 video at FPS, a keyframe every second, no B-frames."""
    with av.open(str(path), "w") as out:
        options = {"g": str(FPS), "keyint_min": str(FPS), "bf": "0", "sc_threshold": "0"}
        stream = out.add_stream("libx264", rate=FPS, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(round(seconds * FPS)):
            image = np.full((height, width, 3), (i * 5) % 255, np.uint8)
            image[:, (i * 7) % width :] = 200
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{quote(USER, safe='')}:{quote(password, safe='')}@{parts.hostname}:{parts.port}"
    return parts._replace(netloc=netloc).geturl()


def secret_forms(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote(secret)}


def assert_no_secret(
    secrets: tuple[str, ...],
    source: CameraSource,
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No form of any secret in the logs, health(), the state-change reasons or last_error."""
    texts = {"log text": caplog.text}
    for index, record in enumerate(caplog.records):
        texts[f"log record {index} ({record.name})"] = record.getMessage() + repr(record.args)
    health = source.health()
    texts["health"] = repr(health) + repr({k: dataclasses.asdict(v) for k, v in health.items()})
    texts["state changes"] = repr([change for _, change in recorder.changes])
    texts["last_error"] = repr(source.detect.last_error)
    for secret in secrets:
        for form in secret_forms(secret):
            for where, text in texts.items():
                assert form not in text, f"a password form leaked into the {where}"


# -- fake servers on loopback ----------------------------------------------------------------------------

# SPS/PPS of a 320x240 baseline H.264 stream (libx264, made once with PyAV): a valid SDP for a camera
# that then never sends a single RTP packet.
SPROP = "Z0LAC9oFB+hAAAADAEAAAAUjxQqo,aM4PyA=="
SILENT_SDP = (
    "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=silent camera\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    f"a=fmtp:96 packetization-mode=1;profile-level-id=42c00b;sprop-parameter-sets={SPROP}\r\n"
    "a=control:track1\r\n"
)


class SilentRtspServer:
    """Answers every RTSP request with 200 (DESCRIBE with a valid H.264 SDP) and never sends media."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = int(self._listener.getsockname()[1])
        self.requests: list[str] = []
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="silent-rtsp", daemon=True).start()

    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/silent"

    def plays(self) -> int:
        with self._lock:
            return self.requests.count("PLAY")

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._closed:
                    connection.close()
                    return
                self._connections.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        buffer = b""
        with contextlib.suppress(OSError), connection:
            while data := connection.recv(4096):
                buffer += data
                while b"\r\n\r\n" in buffer:
                    head, _, rest = buffer.partition(b"\r\n\r\n")
                    lines = head.decode("latin-1").split("\r\n")
                    headers = {
                        k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])
                    }
                    length = int(headers.get("content-length", "0"))
                    if len(rest) < length:
                        break
                    buffer = rest[length:]
                    connection.sendall(self._answer(lines[0], headers.get("cseq", "0")))

    def _answer(self, request_line: str, cseq: str) -> bytes:
        method, url = [*request_line.split(), "", ""][:2]
        with self._lock:
            self.requests.append(method)
        extra, body = [], ""
        if method == "OPTIONS":
            extra.append("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER")
        elif method == "DESCRIBE":
            extra += ["Content-Type: application/sdp", f"Content-Base: {url}/"]
            body = SILENT_SDP
        elif method == "SETUP":
            extra += ["Transport: RTP/AVP/TCP;unicast;interleaved=0-1", "Session: 4242;timeout=60"]
        else:  # PLAY, GET_PARAMETER, TEARDOWN
            extra.append("Session: 4242")
        head = "".join(f"{line}\r\n" for line in ["RTSP/1.0 200 OK", f"CSeq: {cseq}", *extra])
        return f"{head}Content-Length: {len(body)}\r\n\r\n{body}".encode("latin-1")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        self._listener.close()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()


@pytest.fixture
def silent_server() -> Iterator[SilentRtspServer]:
    server = SilentRtspServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtspSimulator]:
    """Untouched mounts shared by the tests that do not kill or freeze the server."""
    short = write_h264(tmp_path_factory.mktemp("faults-media") / "short.mp4", seconds=3)
    mounts = [
        Mount("live", "pattern", width=320, height=240, fps=FPS, gop=FPS),
        Mount("short", "file", path=short),
        Mount("secured", "pattern", width=320, height=240, fps=FPS, gop=FPS, username=USER,
              password=RIGHT_PASSWORD),
    ]  # fmt: skip
    with RtspSimulator(mounts) as server:
        yield server


@pytest.fixture
def libav_debug(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Capture every log record at DEBUG, FFmpeg's own (forwarded by PyAV to the "libav" loggers) included."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="libav")
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.DEBUG)
    try:
        yield
    finally:
        av.logging.set_level(previous)


# -- 1. server killed, then restarted -----------------------------------------------------------------


def test_killed_server_goes_offline_and_comes_back_after_restart() -> None:
    server = RtspSimulator([Mount("live", "pattern", width=320, height=240, fps=FPS, gop=FPS)])
    server.start()
    try:
        config = make_config(server.url("live"), stall_after_s=3.0)
        with running(config) as (source, recorder):
            recorder.wait_for(S.ONLINE, timeout=20)
            wait_until(lambda: source.detect.frames_sampled >= 2, timeout=10)

            killed = time.monotonic()
            server.kill()
            offline_at, change = recorder.wait_for(S.OFFLINE, after=killed, timeout=15)
            assert offline_at - killed <= 5, f"OFFLINE {offline_at - killed:.1f} s after the kill"
            assert change.old == S.ONLINE

            time.sleep(2)  # a few refused reconnects while the camera is gone: still just OFFLINE
            assert source.state == S.OFFLINE
            server.start()
            restarted = time.monotonic()
            sampled = source.detect.frames_sampled
            frames_at = wait_until(lambda: source.detect.frames_sampled > sampled, timeout=30)
            bound = max_backoff(config) + 5
            assert frames_at - restarted <= bound, f"frames {frames_at - restarted:.1f} s after restart"
            frame = source.slot.take()
            assert frame is not None and frame.connection > 1
            time.sleep(1)

            assert recorder.states(since=killed) == [S.OFFLINE, S.ONLINE], recorder.summary()
            assert source.state == S.ONLINE
            assert source.detect.reconnects >= 1
    finally:
        server.stop()


# -- 2. server frozen (SIGSTOP) ----------------------------------------------------------------------


@pytest.mark.parametrize("past_read_timeout", [False, True], ids=["brief-freeze", "freeze-past-read-timeout"])
def test_frozen_server_is_stalled_then_recovers_after_resume(past_read_timeout: bool) -> None:
    server = RtspSimulator([Mount("live", "pattern", width=320, height=240, fps=FPS, gop=FPS)])
    server.start()
    try:
        config = make_config(
            server.url("live"), read_timeout_s=3.0, stall_after_s=1.0, watchdog_timeout_s=6.0
        )
        with running(config) as (source, recorder):
            recorder.wait_for(S.ONLINE, timeout=20)
            wait_until(lambda: source.detect.frames_sampled >= 2, timeout=10)

            paused = time.monotonic()
            server.pause()
            try:
                stalled_at, _ = recorder.wait_for(S.STALLED, after=paused, timeout=15)
                assert stalled_at - paused <= config.read_timeout_s + 1, (
                    f"STALLED {stalled_at - paused:.1f} s after the freeze"
                )
                assert source.health()["detect"].state == "stalled"
                if past_read_timeout:  # the frozen connection is given up; reconnects meet a frozen server
                    recorder.wait_for(S.OFFLINE, after=paused, timeout=config.watchdog_timeout_s + 5)
                    time.sleep(1)
            finally:
                server.resume()
            resumed = time.monotonic()
            recorder.wait_for(S.ONLINE, after=resumed, timeout=20)
            packets = source.detect.packets
            wait_until(lambda: source.detect.packets > packets + FPS, timeout=10)

            after_pause = recorder.states(since=paused)
            # A freeze past FFmpeg's read timeout: its first timeout hands out the frame it held back (a
            # late packet: ONLINE, then STALLED again), its second one ends the connection.
            assert after_pause in (
                [S.STALLED, S.ONLINE],
                [S.STALLED, S.OFFLINE, S.ONLINE],
                [S.STALLED, S.ONLINE, S.STALLED, S.OFFLINE, S.ONLINE],
            ), recorder.summary()
            if past_read_timeout:
                assert S.OFFLINE in after_pause and source.detect.reconnects >= 1
    finally:
        server.stop()


# -- 3. handshake completes, no media ever comes -------------------------------------------------------


@pytest.mark.parametrize(
    ("read_timeout_s", "watchdog_timeout_s", "ends_by"),
    [(2.0, 6.0, "read timeout"), (8.0, 3.0, "watchdog")],  # the watchdog: as if FFmpeg's own timeout failed
)
def test_handshake_without_media_goes_offline_and_keeps_retrying(
    silent_server: SilentRtspServer, read_timeout_s: float, watchdog_timeout_s: float, ends_by: str
) -> None:
    config = make_config(
        silent_server.url(),
        open_timeout_s=2.0,
        read_timeout_s=read_timeout_s,
        watchdog_timeout_s=watchdog_timeout_s,
    )
    started = time.monotonic()
    recorder = Recorder()
    source = CameraSource(config, FrameSlot(), on_state=recorder)
    source.start()
    try:
        offline_at, change = recorder.wait_for(S.OFFLINE, timeout=30)
        # av.open probes for packets up to the open timeout, then the read timeout or the watchdog ends it
        took = offline_at - started
        assert took <= config.open_timeout_s + min(read_timeout_s, watchdog_timeout_s) + SLACK_S, took
        assert change.reason is not None and ends_by in change.reason, recorder.summary()
        assert silent_server.plays() >= 1  # the handshake did complete

        wait_until(lambda: silent_server.plays() >= 3 and source.detect.reconnects >= 2, timeout=30)
        assert source.state == S.OFFLINE
        assert recorder.states(since=0) == [S.OFFLINE], recorder.summary()
        assert source.detect.packets == 0 and source.detect.frames_sampled == 0
        assert source.detect.last_error is not None
    finally:
        stopping = time.monotonic()
        source.stop()  # most likely while a reader sits inside FFmpeg waiting for the silent server
        source.join(15)
        stop_took = time.monotonic() - stopping
    assert not source.is_alive(), "stop() hung on a camera that sends nothing"
    # a reader blocked in FFmpeg is waited for until its own timeout, at most 5 s, then left behind
    bound = min(max(config.open_timeout_s, read_timeout_s), 5.0) + SLACK_S
    assert stop_took <= bound, f"stop took {stop_took:.1f} s"
    assert source.state == S.STOPPED


# -- 4. the stream ends cleanly ------------------------------------------------------------------------


def test_clean_end_of_stream_is_offline_then_reconnects(simulator: RtspSimulator) -> None:
    config = make_config(simulator.url("short"))
    with running(config) as (source, recorder):
        first_online, _ = recorder.wait_for(S.ONLINE, timeout=20)
        offline_at, change = recorder.wait_for(S.OFFLINE, after=first_online, timeout=20)
        assert change.reason == "end of stream", recorder.summary()
        assert change.old == S.ONLINE
        assert source.detect.last_error == "end of stream"

        online_at, _ = recorder.wait_for(S.ONLINE, after=offline_at, timeout=max_backoff(config) + 10)
        assert source.detect.reconnects >= 1
        assert source.slot.wait(5) is not None
        assert recorder.states(since=0, until=online_at) == [S.ONLINE, S.OFFLINE, S.ONLINE]


# -- 5. wrong credentials, and a crash inside the reader ----------------------------------------------


@pytest.mark.usefixtures("libav_debug")
def test_wrong_password_is_auth_failed_backs_off_and_never_leaks(
    simulator: RtspSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    url = with_password(simulator.url("secured", with_credentials=False), CANARY)
    assert quote(CANARY, safe="") in url
    config = make_config(url, auth_backoff_s=2.5, backoff_initial_s=0.3)
    with running(config) as (source, recorder):
        failed_at, change = recorder.wait_for(S.AUTH_FAILED, timeout=20)
        assert change.reason is not None and "credentials" in change.reason

        attempts = [
            wait_until(lambda: source.detect.reconnects >= 1, timeout=20, interval=0.01),
            wait_until(lambda: source.detect.reconnects >= 2, timeout=20, interval=0.01),
        ]
        # `reconnects` goes up right before the next attempt: each one waited the whole auth backoff
        assert attempts[0] - failed_at >= config.auth_backoff_s - 0.05, attempts[0] - failed_at
        assert attempts[1] - attempts[0] >= config.auth_backoff_s - 0.05, attempts[1] - attempts[0]
        time.sleep(0.5)  # let the second attempt fail and be logged

        assert recorder.states(since=0) == [S.AUTH_FAILED], recorder.summary()
        assert source.detect.packets == 0
        assert source.detect.last_error is not None and "401" in source.detect.last_error
        assert any(r.name.startswith("libav") for r in caplog.records), "FFmpeg's log was not captured"
        assert_no_secret((CANARY, RIGHT_PASSWORD), source, recorder, caplog)
    assert_no_secret((CANARY, RIGHT_PASSWORD), source, recorder, caplog)


@pytest.mark.usefixtures("libav_debug")
def test_crash_inside_the_reader_never_leaks_the_password(
    simulator: RtspSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    url = with_password(simulator.url("secured", with_credentials=False), RIGHT_PASSWORD)
    crashes: list[int] = []

    def exploding_motion(image: np.ndarray) -> bool:
        crashes.append(image.shape[0])
        # the kind of message a library would raise: the full URL, secrets included
        raise RuntimeError(
            f"motion gate failed on {url} (password {RIGHT_PASSWORD!r}, quoted {quote(RIGHT_PASSWORD)})"
        )

    config = make_config(url)
    with running(config, motion=exploding_motion) as (source, recorder):
        online_at, _ = recorder.wait_for(S.ONLINE, timeout=20)
        offline_at, change = recorder.wait_for(S.OFFLINE, after=online_at, timeout=20)
        assert change.reason is not None and "RuntimeError" in change.reason, recorder.summary()
        assert "***" in change.reason
        # it is not stuck: it reconnects and crashes again
        recorder.wait_for(S.ONLINE, after=offline_at, timeout=max_backoff(config) + 10)
        wait_until(lambda: len(crashes) >= 2 and source.state == S.OFFLINE, timeout=20)
        assert source.detect.reconnects >= 1
        assert_no_secret((CANARY, RIGHT_PASSWORD), source, recorder, caplog)
    assert_no_secret((CANARY, RIGHT_PASSWORD), source, recorder, caplog)


# -- 6. closed port, and a host that never answers -----------------------------------------------------


def test_closed_port_fails_fast_and_stays_offline() -> None:
    config = make_config(f"rtsp://127.0.0.1:{free_port()}/cam", open_timeout_s=3.0)
    started = time.monotonic()
    with running(config) as (source, recorder):
        offline_at, change = recorder.wait_for(S.OFFLINE, timeout=15)
        assert offline_at - started <= config.open_timeout_s + 1, (
            f"first attempt took {offline_at - started:.1f} s"
        )
        assert change.old == S.CONNECTING
        assert change.reason is not None and "cannot connect" in change.reason
        wait_until(lambda: source.detect.reconnects >= 2, timeout=15)
        assert recorder.states(since=0) == [S.OFFLINE]


def test_unanswered_connect_is_bounded_by_the_open_timeout() -> None:
    """A host that drops SYNs, simulated on loopback: a listener whose accept queue is full."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(4):  # never accepted: once the queue is full, new SYNs are dropped
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.3)
        with socket.socket() as probe:  # the trap works: a plain connect now hangs
            probe.settimeout(1.0)
            with pytest.raises(TimeoutError):
                probe.connect(("127.0.0.1", port))

        config = make_config(f"rtsp://127.0.0.1:{port}/cam", open_timeout_s=2.0)
        started = time.monotonic()
        with running(config) as (source, recorder):
            offline_at, change = recorder.wait_for(S.OFFLINE, timeout=15)
            assert offline_at - started <= config.open_timeout_s + 1, (
                f"first attempt took {offline_at - started:.1f} s"
            )
            assert change.reason is not None and "timeout" in change.reason, recorder.summary()
            wait_until(lambda: source.detect.reconnects >= 1, timeout=15)
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# -- 7. one broken camera does not slow down the others -----------------------------------------------


CAMERAS = 50  # the figure: 49 healthy cameras and one broken one


def test_healthy_cameras_keep_their_rate_while_a_broken_one_cycles(
    simulator: RtspSimulator, silent_server: SilentRtspServer
) -> None:
    healthy = [make_config(simulator.url("live"), camera_id=f"ok{i}") for i in range(CAMERAS - 1)]
    broken = make_config(
        silent_server.url(),
        camera_id="broken",
        open_timeout_s=1.5,
        read_timeout_s=1.5,
        watchdog_timeout_s=3.0,
    )
    with contextlib.ExitStack() as stack:
        # The first camera alone, until media flows: gst-rtsp-server can abort on an assertion
        # (gst_rtsp_media_get_rates) when several clients PLAY a shared live media that has not sent yet.
        first = stack.enter_context(running(healthy[0]))
        first[1].wait_for(S.ONLINE, timeout=30)
        sources = [first]
        for config in [*healthy[1:], broken]:
            sources.append(stack.enter_context(running(config)))
            time.sleep(0.05)  # a village's cameras do not all connect in the same millisecond either
        for _, recorder in sources[: CAMERAS - 1]:
            recorder.wait_for(S.ONLINE, timeout=60)
        time.sleep(2)  # past the first probe of every connection

        before = [source.detect.packets for source, _ in sources]
        broken_before = sources[-1][0].detect.reconnects
        window_start = time.monotonic()
        time.sleep(10)
        window = time.monotonic() - window_start
        after = [source.detect.packets for source, _ in sources]

        rates = [(a - b) / window for a, b in zip(after[:-1], before[:-1], strict=True)]
        # gst-rtsp-server itself now and then ends one client of a shared mount with 49 readers on 2 cores
        # (seen in about 1 run in 10): such a camera must be back online; at most 2 of 49 may be.
        disturbed = [(s.camera_id, r.summary()) for s, r in sources[:-1] if r.states(since=window_start)]
        assert len(disturbed) <= 2, disturbed
        for (source, recorder), rate in zip(sources[:-1], rates, strict=True):
            if recorder.states(since=window_start):
                assert recorder.states(since=window_start)[-1] == S.ONLINE, recorder.summary()
                continue
            # At least 80 % of the camera's rate; above it only by catching up packets held up before the
            # window (TCP delivers them late, never loses them), which is not a lost rate.
            assert 0.8 * FPS <= rate <= 1.5 * FPS, f"{source.camera_id}: {rate:.1f} packets/s, want {FPS}"
        broken_source, broken_recorder = sources[-1]
        assert broken_source.detect.reconnects - broken_before >= 2, "the broken camera stopped retrying"
        assert broken_source.state == S.OFFLINE
        assert after[-1] == 0
        assert broken_recorder.states(since=0) == [S.OFFLINE]
