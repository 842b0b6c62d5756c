from __future__ import annotations

import re

import pytest

from ingest.urls import CameraURLError, redact_text, redact_url, validate_camera_url

CANARY = "Canary-Pw%41:x@y"


@pytest.mark.parametrize(
    "url",
    [
        "rtsp://cam.example:554/stream1",
        "rtsps://user:pw@10.1.2.3/h264",
        "rtsp://[2001:db8::1]:8554/live",
    ],
)
def test_camera_urls_that_are_allowed(url: str) -> None:
    assert validate_camera_url(url) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("file:///etc/passwd", "scheme 'file'"),
        ("/etc/passwd", "scheme '(none)'"),
        ("http://cam/stream", "scheme 'http'"),
        ("concat:a.mp4|b.mp4", "scheme 'concat'"),
        ("data:video/mp4;base64,AAAA", "scheme 'data'"),
        ("rtsp://169.254.169.254/latest", "link-local"),
        ("rtsp://[fe80::1]/x", "link-local"),
        ("rtsp:///nohost", "no host"),
        ("rtsp://metadata.google.internal/x", "metadata"),
    ],
)
def test_camera_urls_that_are_refused(url: str, why: str) -> None:
    with pytest.raises(CameraURLError, match=re.escape(why)):
        validate_camera_url(url)


def test_refusal_message_hides_the_password() -> None:
    with pytest.raises(CameraURLError) as info:
        validate_camera_url("http://admin:s3cretPW@cam/stream")
    assert "s3cretPW" not in str(info.value)
    assert "admin:***@" in str(info.value)


def test_redact_url_keeps_user_and_host() -> None:
    assert redact_url("rtsp://admin:hunter2@10.0.0.5:554/ch1") == "rtsp://admin:***@10.0.0.5:554/ch1"
    assert redact_url("rtsp://10.0.0.5/ch1") == "rtsp://10.0.0.5/ch1"


def test_redact_text_removes_raw_and_percent_encoded_secret() -> None:
    text = (
        "HTTPUnauthorizedError: rtsp://admin:Canary-Pw%2541%3Ax%40y@1.2.3.4/x failed; "
        f"password was {CANARY} or Canary-Pw%2541%3Ax%40y"
    )
    cleaned = redact_text(text, CANARY)
    assert "Canary" not in cleaned
    assert "admin:***@1.2.3.4" in cleaned


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "redis+sentinel://:s3cret@h1:26379,h2:26379/gridwatch?sentinel_password=zz",
            "redis+sentinel://:***@h1:26379,h2:26379/gridwatch?sentinel_password=***",
        ),
        (
            "rtsp://admin:pw@10.0.0.1:554/s?channel=1&password=abc",
            "rtsp://admin:***@10.0.0.1:554/s?channel=1&password=***",
        ),
        ("rtsp://10.0.0.1/s?channel=1", "rtsp://10.0.0.1/s?channel=1"),
        ("rtsp://u:p@[::1]:554/x", "rtsp://u:***@[::1]:554/x"),
    ],
)
def test_redaction_covers_host_lists_and_password_parameters(url: str, shown: str) -> None:
    assert redact_url(url) == shown
