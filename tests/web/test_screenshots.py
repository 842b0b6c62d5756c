"""A walk through every page with lifelike data (frames of the test clips as snapshots), saving a screenshot
of each as a test artefact. With GRIDWATCH_UPDATE_SCREENSHOTS=1 the dashboard's is also written to
docs/screenshots/operator.png (the README's picture)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest
from playwright.sync_api import Page, expect

if TYPE_CHECKING:
    from conftest import Served

REPO = Path(__file__).resolve().parents[2]
README_SHOT = REPO / "docs" / "screenshots" / "operator.png"


def _frame(clip: Path, index: int) -> np.ndarray:
    capture = cv2.VideoCapture(str(clip))
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = capture.read()
    capture.release()
    assert ok, f"no frame {index} in {clip}"
    return frame


def _pictures(frame: np.ndarray, box: tuple[int, int, int, int], zoom: float = 3.0) -> tuple[bytes, bytes]:
    """The snapshot (the whole frame, the box drawn) and the 320x240 thumbnail around the object."""
    snapshot = frame.copy()
    x1, y1, x2, y2 = box
    cv2.rectangle(snapshot, (x1, y1), (x2, y2), (0, 80, 255), 3)
    height, width = frame.shape[:2]
    w = min(max(x2 - x1, (y2 - y1) * 4 / 3) * zoom, width, height * 4 / 3)
    h = w * 3 / 4
    left = int(min(max((x1 + x2 - w) / 2, 0), width - w))
    top = int(min(max((y1 + y2 - h) / 2, 0), height - h))
    thumb = cv2.resize(snapshot[top : top + int(h), left : left + int(w)], (320, 240))
    return (
        cv2.imencode(".jpg", snapshot, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes(),
        cv2.imencode(".jpg", thumb, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes(),
    )


def _images_loaded(page: Page) -> None:
    page.wait_for_function(
        "() => [...document.querySelectorAll('.alert-card img')].every(i => i.complete && i.naturalWidth > 0)"
    )


def test_every_page_has_a_screenshot(
    served: Served,
    media: dict[str, Path],
    new_page: Callable[..., Page],
    login: Callable[[Page, str], None],
    shot: Callable[..., Path],
    request: pytest.FixtureRequest,
) -> None:
    served.add_user("ada", "admin", name="Ada Lindqvist")
    served.add_user("otto", "operator", name="Otto Brandt")
    served.add_user("pat", "patrol", team="team-a", name="Pat Moreau")
    served.add_camera("cam-well", "Village well", "grid-a")
    served.add_camera("cam-mill", "Mill lane", "grid-b")
    for camera in ("cam-bridge", "cam-school", "cam-ridge", "cam-well"):
        served.camera_state(camera, "online")
    served.camera_state("cam-barn", "offline", error="no packet for 10 s; reconnecting")
    served.camera_state("cam-mill", "stalled")

    now = datetime.now(UTC)
    scenes = [  # camera, grid, label, severity, score, minutes ago, status; clip, frame, box
        ("cam-ridge", "grid-b", "fire", "critical", 0.93, 0.2, None,
         "flames", 220, (420, 320, 645, 545)),
        ("cam-bridge", "grid-a", "smoke", "high", 0.81, 3, "acknowledged",
         "flames", 30, (470, 490, 590, 550)),
        ("cam-school", "grid-a", "person", "normal", 0.88, 11, "dispatched",
         "people", 600, (275, 430, 340, 576)),
        ("cam-well", "grid-a", "person", "normal", 0.76, 26, "on_scene",
         "people", 50, (668, 255, 718, 372)),
        ("cam-barn", "grid-b", "car", "low", 0.84, 48, "resolved",
         "empty", 100, (645, 40, 725, 100)),
        ("cam-mill", "grid-b", "person", "normal", 0.69, 75, "false_alarm",
         "people", 300, (300, 150, 360, 300)),
    ]  # fmt: skip
    alerts = []
    for camera, grid, label, severity, score, minutes, status, clip, index, box in scenes:
        snapshot, thumbnail = _pictures(_frame(media[clip], index), box)
        alert, _ = served.add_alert(
            camera=camera, grid=grid, label=label, severity=severity, score=score,
            at=now - timedelta(minutes=minutes), image=thumbnail, snapshot=snapshot, status=status,
            acted_after_s=35 + 20 * len(alerts),
        )  # fmt: skip
        alerts.append(alert)

    page = new_page(viewport=(1440, 1000))
    login(page, "otto")
    expect(page.locator(".alert-card")).to_have_count(len(scenes))
    expect(page.locator(".cam-tile")).to_have_count(6)
    expect(page.locator(".response-times tbody tr")).to_have_count(2)
    _images_loaded(page)
    page.mouse.move(0, 0)
    page.wait_for_timeout(2600)  # past the arrival highlight
    operator = shot(page, "page-operator", full_page=False)
    callspec = getattr(request.node, "callspec", None)
    if (
        os.environ.get("GRIDWATCH_UPDATE_SCREENSHOTS") == "1"
        and callspec
        and callspec.params["db_url"] == "sqlite"
    ):
        README_SHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(operator, README_SHOT)

    page.goto(f"/ui/#/alerts/{alerts[1].id}")
    expect(page.locator(".detail .alert-card")).to_be_visible()
    page.wait_for_function(
        "() => { const i = document.querySelector('.detail img'); return i && i.naturalWidth > 0; }"
    )
    shot(page, "page-alert-detail")

    phone = new_page(viewport=(390, 844), is_mobile=True, has_touch=True)
    login(phone, "pat")
    expect(phone.locator(".alert-card")).to_have_count(3)  # grid-a's open alerts only
    _images_loaded(phone)
    shot(phone, "page-patrol")

    admin = new_page(viewport=(1440, 900))
    login(admin, "ada")
    for tab in ("cameras", "import", "villages", "grids", "teams", "users"):
        admin.goto(f"/ui/#/admin/{tab}")
        expect(admin.locator(f"#admin-{tab}")).to_be_visible()
        if tab != "import":
            expect(admin.locator(f".table-{tab} tbody tr").first).to_be_visible()
        shot(admin, f"page-admin-{tab}")
    admin.click("#logout")
    expect(admin.locator("#login-form")).to_be_visible()
    shot(admin, "page-login")
