"""grab_frame against the real RTSP simulator: a picture of the right size (shrunk when wide), a wrong
password (auth_failed, never shown), a closed port and a refused URL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import cv2
import numpy as np
import pytest

from ingest import ports
from ingest.frame_grab import grab_frame
from ingest.simulator.server import Mount, RtspSimulator

CANARY = "Canary-gr@b/w0rd%q"
RIGHT = "right-Pa55:grab"


@pytest.fixture(scope="module")
def simulator() -> Iterator[RtspSimulator]:
    mounts = [
        Mount(name="small", kind="pattern", width=320, height=240, fps=10, gop=10),
        Mount(name="wide", kind="pattern", width=1600, height=900, fps=5, gop=5),
        Mount(name="secured", kind="pattern", width=320, height=240, fps=10, gop=10, username="admin",
              password=RIGHT),
    ]  # fmt: skip
    with RtspSimulator(mounts) as server:
        yield server


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"admin:{quote(password, safe='')}@{parts.hostname}:{parts.port}").geturl()


def _decoded(jpeg: bytes | None) -> np.ndarray:
    assert jpeg is not None and jpeg[:2] == b"\xff\xd8"
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def test_a_picture_as_the_camera_sends_it(simulator: RtspSimulator) -> None:
    grabbed = grab_frame(simulator.url("small"))
    assert grabbed.ok, grabbed.error
    assert (grabbed.width, grabbed.height) == (320, 240)
    image = _decoded(grabbed.jpeg)
    assert image.shape == (240, 320, 3) and float(image.std()) > 10


def test_a_wide_picture_is_shrunk_but_reports_the_streams_size(simulator: RtspSimulator) -> None:
    grabbed = grab_frame(simulator.url("wide"), max_width=800)
    assert grabbed.ok, grabbed.error
    assert (grabbed.width, grabbed.height) == (1600, 900)
    assert _decoded(grabbed.jpeg).shape == (450, 800, 3)


def test_a_wrong_password_is_auth_failed_and_never_shown(
    simulator: RtspSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    grabbed = grab_frame(_with_password(simulator.url("secured"), CANARY), open_timeout_s=10)
    assert (grabbed.ok, grabbed.error_kind, grabbed.jpeg) == (False, "auth_failed", None)
    for form in (CANARY, quote(CANARY, safe="")):
        assert form not in (grabbed.error or "") and form not in caplog.text and form not in repr(grabbed)
    assert grab_frame(_with_password(simulator.url("secured"), RIGHT)).ok


def test_a_closed_port_and_a_refused_url_are_results_not_exceptions() -> None:
    closed = grab_frame(f"rtsp://127.0.0.1:{ports.free_port()}/x", open_timeout_s=3, read_timeout_s=3)
    assert (closed.ok, closed.error_kind) == (False, "unreachable"), closed.error
    refused = grab_frame("http://user:secret-pw@10.0.0.1/x")
    assert (refused.ok, refused.error_kind) == (False, "refused_url")
    assert "secret-pw" not in (refused.error or "")
