"""Opening a camera for a one-off look (the probe, a picture for the zone editor): the URL rules, then
`av.open` over TCP with FFmpeg limited to the RTSP protocols, every failure classified and redacted."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import av

from ingest.errors import ErrorKind, classify_open_error, url_secrets
from ingest.urls import PROTOCOL_WHITELIST, CameraURLError, redact_text, validate_camera_url

log = logging.getLogger(__name__)


class OpenFailed(Exception):
    """The camera could not be opened: `kind` says how, `message` why (without the password)."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class CameraURL:
    """A URL about to be opened: as given, as shown (password masked), and the secrets to mask in texts."""

    url: str
    shown: str
    secrets: tuple[str, ...]

    @classmethod
    def of(cls, url: str) -> CameraURL:
        secrets = url_secrets(url)
        return cls(url, redact_text(url.strip(), *secrets), secrets)

    def redact(self, text: str) -> str:
        return redact_text(text, *self.secrets)


def open_camera(camera: CameraURL, open_timeout_s: float, read_timeout_s: float) -> Any:
    """The opened container (use it as a context manager), or `OpenFailed`."""
    started = time.monotonic()
    try:
        url = validate_camera_url(camera.url)
    except CameraURLError as exc:
        raise OpenFailed("refused_url", camera.redact(str(exc))) from None
    try:
        return av.open(
            url,
            options={"rtsp_transport": "tcp", "protocol_whitelist": PROTOCOL_WHITELIST},
            timeout=(open_timeout_s, read_timeout_s),
        )
    except Exception as exc:  # every camera failure becomes an OpenFailed
        kind, message = classify_open_error(exc, url, time.monotonic() - started, open_timeout_s)
        raise OpenFailed(kind, camera.redact(message)) from None
