"""The web UI in a real browser: Debian's Chromium driven by Playwright, against the API served by uvicorn on
a free loopback port, with real Redis (the live feed), real S3 (thumbnails, snapshots, clips behind
presigned redirects) and the metadata database on SQLite and PostgreSQL.

Nothing is downloaded: Playwright launches /usr/bin/chromium (`make setup` installs it). Screenshots go to
$GRIDWATCH_ARTEFACTS (default tests/web/artefacts/, ignored by git).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
import uvicorn
from argon2 import PasswordHasher
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Playwright, sync_playwright

from alerts.bus import AlertBus, BusMessage
from gridwatch.alerting import sync_organisation
from gridwatch.api import create_app
from gridwatch.api_state import AppState
from gridwatch.auth.passwords import hash_password
from gridwatch.camera_registry import CameraFields, CameraRegistry, sync_config_cameras
from gridwatch.feed import FeedHub
from gridwatch.sealing import SecretBox, new_key
from gridwatch.services import RedisServer, S3Server
from gridwatch.settings import Settings
from ingest.health import StreamHealth
from ingest.simulator.server import Mount, RtspSimulator
from storage.metadata import AlertRecord, MetadataDB, UserRecord
from storage.metadata.records import ClipStatus, Role
from storage.objectstore import ObjectStore

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct horse battery staple"
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)  # tests only: cheap to hash
ARTEFACTS = Path(os.environ.get("GRIDWATCH_ARTEFACTS", REPO / "tests" / "web" / "artefacts"))


def organisation(tmp_path: Path) -> Settings:
    """Two villages, two grids with their patrol teams, and config cameras in both grids."""
    return Settings.model_validate(
        {
            "data_dir": str(tmp_path / "data"),
            "schedules": [{"name": "nights", "windows": [{"start": "19:00", "end": "06:00"}]}],
            "villages": [{"id": "riverside", "name": "Riverside"}, {"id": "hilltop", "name": "Hilltop"}],
            "teams": [
                {"id": "team-a", "name": "Riverside patrol"},
                {"id": "team-b", "name": "Hilltop patrol"},
            ],
            "grids": [
                {"id": "grid-a", "name": "Riverside east", "village": "riverside", "team": "team-a"},
                {"id": "grid-b", "name": "Hilltop north", "village": "hilltop", "team": "team-b"},
            ],
            "cameras": [
                {"id": "cam-bridge", "name": "Bridge road", "village": "riverside", "grid": "grid-a",
                 "url": "rtsp://viewer:cam-secret@10.0.0.11/stream2"},
                {"id": "cam-school", "name": "School gate", "village": "riverside", "grid": "grid-a",
                 "url": "rtsp://10.0.0.12/stream2"},
                {"id": "cam-barn", "name": "Old barn", "village": "hilltop", "grid": "grid-b",
                 "url": "rtsp://10.0.0.21/stream2"},
                {"id": "cam-ridge", "name": "Ridge lookout", "village": "hilltop", "grid": "grid-b",
                 "url": "rtsp://10.0.0.22/stream2"},
            ],
        }
    )  # fmt: skip


def stream_health(state: str, *, error: str | None = None, fps: float = 10.0) -> dict[str, Any]:
    """What the API shows for a camera pulled by a worker (`camera_health`), for the status wall."""
    health = StreamHealth(
        state=state,
        state_since=time.time() - 60,
        input_fps=fps if state == "online" else 0.0,
        decoded_fps=2.0 if state == "online" else 0.0,
        bitrate_kbps=850.0 if state == "online" else 0.0,
        last_packet_age_s=0.1 if state == "online" else None,
        reconnects=0 if state == "online" else 4,
        last_error=error,
        decode_mode="keyframes",
        codec="h264",
        width=1280,
        height=720,
        packets=1000,
        frames_decoded=100,
        frames_sampled=50,
    )
    return {"detect": dataclasses.asdict(health)}


def caption_jpeg(text: str, colour: tuple[int, int, int], size: tuple[int, int] = (320, 180)) -> bytes:
    """A small picture with a gradient and a caption (thumbnails of test alerts)."""
    width, height = size
    ramp = np.linspace(0.35, 1.0, width, dtype=np.float32)[None, :, None]
    image = (np.ones((height, width, 3), np.float32) * np.array(colour, np.float32) * ramp).astype(np.uint8)
    cv2.putText(
        image, text, (12, height - 16), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA
    )
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return data.tobytes()


def h264_clip(path: Path, seconds: float = 2.0, fps: int = 10, size: tuple[int, int] = (320, 240)) -> bytes:
    """An MP4 of moving H.264 video, as the recorder stores clips (the browser must be able to play it)."""
    width, height = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"g": str(fps), "bf": "0"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(round(seconds * fps)):
            image = np.full((height, width, 3), (i * 9) % 255, np.uint8)
            image[:, (i * 11) % width :] = (30, 120, 230)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path.read_bytes()


@dataclass
class Served:
    """The API served for a browser, and what the tests reach behind it."""

    url: str
    db: MetadataDB
    bus: AlertBus
    feed: FeedHub
    store: ObjectStore
    settings: Settings
    registry: CameraRegistry
    health: dict[str, dict[str, Any]] = field(default_factory=dict)
    password: str = PASSWORD  # every user's

    def add_user(self, user_id: str, role: Role, team: str | None = None, name: str | None = None) -> str:
        """A user who can log in with PASSWORD; returns the user id."""
        password_hash = hash_password(PASSWORD, FAST)
        self.db.create_user(
            UserRecord(user_id, name or user_id.title(), role, team, password_hash, source="api")
        )
        return user_id

    def add_alert(
        self,
        *,
        camera: str,
        grid: str,
        label: str = "fire",
        severity: str = "critical",
        score: float = 0.91,
        at: datetime | None = None,
        image: bytes | None = None,
        clip: bytes | None = None,
        clip_status: ClipStatus = "pending",
        incident: bool = True,
        status: str | None = None,
        acted_after_s: float = 40.0,
        snapshot: bytes | None = None,
    ) -> tuple[AlertRecord, str | None]:
        """An alert row as the pipeline writes it (thumbnail and snapshot in the store), put into an incident
        as the dispatcher does (`incident`), optionally moved on to `status`. Returns it and its incident."""
        at = at or datetime.now(UTC)
        alert_id = uuid.uuid4().hex
        camera_row = self.db.get_camera(camera)
        village = camera_row.village if camera_row else "riverside"
        picture = image or caption_jpeg(f"{label} @ {camera}", (40, 90, 200))
        snapshot_key = ObjectStore.snapshot_key(camera, at, alert_id)
        thumbnail_key = ObjectStore.thumbnail_key(camera, at, alert_id)
        self.store.put_bytes(snapshot_key, snapshot or picture, "image/jpeg")
        self.store.put_bytes(thumbnail_key, picture, "image/jpeg")
        clip_key = None
        if clip is not None:
            clip_key = ObjectStore.clip_key(camera, at, alert_id)
            self.store.put_bytes(clip_key, clip, "video/mp4")
            clip_status = "stored"
        record = AlertRecord(
            alert_id, camera, village, grid, label, score, (0.2, 0.3, 0.5, 0.8), at, at,
            snapshot_key=snapshot_key, thumbnail_key=thumbnail_key, clip_key=clip_key,
            clip_status=clip_status, clip_duration_s=8.0 if clip_key else None,
            severity=severity, rule=f"{label}-rule",
        )  # fmt: skip
        self.db.add_alert(record)
        incident_id = None
        if incident:
            team = next((g.team for g in self.settings.grids if g.id == grid), None)
            joined = self.db.attach_alert_to_incident(
                alert_id=alert_id, camera_id=camera, village=village, grid=grid, group=f"{label}-{alert_id}",
                label=label, severity=severity, at=at, window_s=600, team=team,
            )  # fmt: skip
            incident_id = joined.incident.id
            steps = ["acknowledged", "dispatched", "on_scene", "resolved"]
            if status in steps:
                previous = "new"
                for step in steps[: steps.index(status) + 1]:
                    self.db.set_incident_status(
                        incident_id, expected=previous, status=step, user_id=None,
                        at=at + timedelta(seconds=acted_after_s * (1 + steps.index(step))),
                    )  # fmt: skip
                    previous = step
            elif status == "false_alarm":
                self.db.set_incident_status(incident_id, expected="new", status=status, user_id=None)
        return record, incident_id

    def publish(self, alert: AlertRecord, kind: str = "alert", **extra: Any) -> str:
        """Put the alert on the bus the live feed follows (as the pipeline does); returns the entry id."""
        return self.bus.publish(
            BusMessage(
                alert.id, kind, alert.camera_id, alert.village, alert.grid, alert.label, alert.score,
                alert.created_at.isoformat(), snapshot_key=alert.snapshot_key, bbox=alert.bbox,
                severity=alert.severity, rule=alert.rule, **extra,
            )
        )  # fmt: skip

    def add_camera(self, camera_id: str, name: str, grid: str) -> None:
        """A camera an admin registered (not probed)."""
        fields = CameraFields(id=camera_id, name=name, grid=grid, url=f"rtsp://10.9.0.{len(name)}/stream2")
        self.registry.register(fields, probe=False, at=datetime.now(UTC))

    def camera_state(self, camera_id: str, state: str, error: str | None = None) -> None:
        """Show the camera in `state` (what the worker pulling it would report)."""
        self.health[camera_id] = stream_health(state, error=error)

    def wait_for_subscribers(self, count: int = 1, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.feed.subscribers < count:
            if time.monotonic() > deadline:
                pytest.fail(f"the live feed has {self.feed.subscribers} subscribers, not {count}")
            time.sleep(0.02)


@pytest.fixture
def served(
    db: MetadataDB, redis_server: RedisServer, s3_server: S3Server, s3_keys: tuple[str, str], tmp_path: Path
) -> Iterator[Served]:
    settings = organisation(tmp_path)
    sync_organisation(settings, db)
    box = SecretBox(new_key())
    sync_config_cameras(settings, db, box, datetime.now(UTC))
    bus = AlertBus.from_url(redis_server.url, f"web-{uuid.uuid4().hex[:10]}:alerts")
    feed = FeedHub(bus.client, bus.stream)
    feed.start()
    store = ObjectStore(s3_server.endpoint, *s3_keys, bucket=f"web-{uuid.uuid4().hex[:12]}")
    store.ensure_bucket()
    health: dict[str, dict[str, Any]] = {}
    registry = CameraRegistry(db, box)
    state = AppState(
        db, store, 300, camera_health=health.get, settings=settings, publish=bus.publish, feed=feed,
        registry=registry,
    )  # fmt: skip
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    config = uvicorn.Config(
        create_app(state), log_level="warning", lifespan="on", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield Served(
            f"http://127.0.0.1:{sock.getsockname()[1]}", db, bus, feed, store, settings, registry, health
        )
    finally:
        server.should_exit = True
        thread.join(15)
        feed.stop()
        bus.close()
        store.close()


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: `make setup` installs Debian's chromium"
    browser = playwright_driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    yield browser
    browser.close()


@dataclass
class PageProblems:
    """What a page reported that a working UI never does: script errors and CSP violations."""

    errors: list[str] = field(default_factory=list)

    def console(self, message: ConsoleMessage) -> None:
        text = message.text
        if "Content Security Policy" in text or "Content-Security-Policy" in text:
            self.errors.append(f"CSP: {text}")
        elif message.type == "error" and "Failed to load resource" not in text:
            self.errors.append(f"console: {text}")


@pytest.fixture
def new_page(browser: Browser, served: Served) -> Iterator[Callable[..., Page]]:
    """`new_page(viewport=(w, h), **context options)`: a page in a fresh browser context (its own cookies);
    at the end, no script error and no CSP violation may have happened on any of them."""
    contexts: list[tuple[BrowserContext, PageProblems]] = []

    def make(viewport: tuple[int, int] = (1440, 960), **options: Any) -> Page:
        context = browser.new_context(
            viewport={"width": viewport[0], "height": viewport[1]}, base_url=served.url, **options
        )
        context.set_default_timeout(10_000)
        problems = PageProblems()
        page = context.new_page()
        page.on("console", problems.console)
        page.on("pageerror", lambda exc: problems.errors.append(f"pageerror: {exc}"))
        contexts.append((context, problems))
        return page

    yield make
    found = [e for _, p in contexts for e in p.errors]
    for context, _ in contexts:
        context.close()
    assert not found, "the pages reported errors:\n" + "\n".join(found)


def log_in(page: Page, user_id: str, password: str = PASSWORD) -> None:
    """Log in through the login form and wait until the app shows who is logged in."""
    page.goto("/")
    page.fill("#f-login-username", user_id)
    page.fill("#f-login-password", password)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#who-name")


@pytest.fixture
def login() -> Callable[..., None]:
    """`login(page, user_id, password=PASSWORD)`: log in through the form."""
    return log_in


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Callable[..., Path]:
    """`shot(page, name, full_page=True)`: save a screenshot as a test artefact (named with the database)."""

    def save(page: Page, name: str, *, full_page: bool = True) -> Path:
        callspec = getattr(request.node, "callspec", None)
        dialect = callspec.params.get("db_url", "any") if callspec is not None else "any"
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTEFACTS / f"{name}-{dialect}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path

    return save


@pytest.fixture(scope="session")
def rtsp() -> Iterator[RtspSimulator]:
    """A real RTSP server with a 320x240, 10 fps test pattern at mount `gate`."""
    with RtspSimulator([Mount(name="gate", kind="pattern", width=320, height=240, fps=10, gop=10)]) as server:
        yield server


@pytest.fixture(scope="session")
def clip_mp4(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A two-second H.264 MP4 (an alert's clip)."""
    return h264_clip(tmp_path_factory.mktemp("clip") / "clip.mp4")
