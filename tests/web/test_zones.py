"""The zone editor in a real browser: an admin draws a zone and a mask on the picture a real RTSP camera
sends, saves them, comes back, drags a point and removes the mask; the database holds exactly what was drawn.
A camera of the config file is shown read-only, and a camera with no picture can still be drawn on."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import Page, expect

from gridwatch.camera_registry import CameraFields
from ingest.simulator.server import RtspSimulator

if TYPE_CHECKING:
    from conftest import Served

XSS = "<img src=x onerror=window.__xss=1>"


def _near(points: list[list[float]], wanted: list[tuple[float, float]]) -> bool:
    return len(points) == len(wanted) and all(
        abs(x - wx) < 0.015 and abs(y - wy) < 0.015 for (x, y), (wx, wy) in zip(points, wanted, strict=True)
    )


def _detection(served: Served, camera_id: str) -> dict[str, Any] | None:
    camera = served.db.get_camera(camera_id)
    assert camera is not None
    return camera.detection


def test_an_admin_draws_zones_and_masks_on_the_cameras_picture(
    served: Served,
    rtsp: RtspSimulator,
    new_page: Callable[..., Page],
    login: Callable[[Page, str], None],
    shot: Callable[[Page, str], object],
) -> None:
    fields = CameraFields(id="gate-z", name=f"Gate {XSS}", grid="grid-a", url=rtsp.url("gate"))
    served.registry.register(fields, probe=False, at=datetime.now(UTC))
    served.add_user("ada", "admin")
    page = new_page()
    login(page, "ada")
    page.goto(f"{served.url}/ui/#/admin/cameras")
    row = page.locator('.table-cameras tr[data-id="gate-z"]')
    row.get_by_role("button", name="Zones").click()
    editor = page.locator("dialog.zone-editor")
    expect(editor).to_have_attribute("data-picture", "loaded", timeout=30_000)
    expect(editor.locator("h3")).to_have_text(f"Zones and masks: Gate {XSS}")  # the name as text
    assert page.evaluate("document.querySelector('.zone-frame').naturalWidth") == 320
    expect(editor.locator(".zone-picture-note")).to_contain_text("320×240")
    expect(editor.locator("#zone-list")).to_have_text("No zones or masks: the whole frame counts.")

    first = page.locator("#zone-stage").bounding_box()
    assert first is not None

    def at(x: float, y: float) -> tuple[float, float]:
        """Where a point of the frame is on the screen now (the dialog centres itself as it grows)."""
        stage = page.locator("#zone-stage").bounding_box()
        assert stage is not None
        return stage["x"] + x * stage["width"], stage["y"] + y * stage["height"]

    # a zone needs a valid name first
    page.click("#zone-new")
    expect(editor.locator("#zone-error")).to_contain_text("A zone needs a name")
    page.fill("#zone-name", "yard")
    page.click("#zone-new")
    expect(editor.locator("#zone-finish")).to_be_disabled()  # fewer than 3 points
    zone = [(0.1, 0.5), (0.5, 0.5), (0.5, 0.9), (0.1, 0.9)]
    for x, y in zone:
        page.mouse.click(*at(x, y))
    page.mouse.click(*at(0.3, 0.3))
    page.click("#zone-undo")  # the fifth point is taken back
    expect(editor.locator("#zone-hint")).to_contain_text("4 so far")
    page.click("#zone-finish")
    # a mask, closed by a click on its first point
    page.select_option("#zone-kind", "mask")
    expect(editor.locator("#zone-name")).to_be_hidden()
    page.click("#zone-new")
    mask = [(0.6, 0.1), (0.9, 0.1), (0.9, 0.3)]
    for x, y in mask:
        page.mouse.click(*at(x, y))
    page.mouse.click(*at(0.605, 0.1))
    expect(editor.locator(".zone-item")).to_have_count(2)
    expect(editor.locator(".zone-label")).to_have_text("yard")
    expect(editor.locator("polygon.zone-zone")).to_have_count(1)
    expect(editor.locator("polygon.zone-mask")).to_have_count(1)
    shot(page, "admin-zone-editor", full_page=False)
    page.click("#zone-save")
    expect(editor).to_have_count(0)
    expect(row.locator(".detection")).to_have_text("1 zone · 1 mask")
    saved = _detection(served, "gate-z")
    assert saved is not None
    assert [z["name"] for z in saved["zones"]] == ["yard"]
    assert _near(saved["zones"][0]["polygon"], zone), saved
    assert len(saved["masks"]) == 1 and _near(saved["masks"][0], mask), saved
    assert saved["motion_masks"] == [] and saved["thresholds"] == {}

    # back again: drag the zone's first point, remove the mask
    row.get_by_role("button", name="Zones").click()
    expect(editor).to_have_attribute("data-picture", "loaded", timeout=30_000)
    expect(editor.locator(".zone-item")).to_have_count(2)
    again = page.locator("#zone-stage").bounding_box()
    assert again is not None and (again["width"], again["height"]) == (first["width"], first["height"])
    editor.locator(".zone-item[data-kind=zone] .zone-select").click()
    handle = editor.locator('.zone-point[data-shape="0"][data-index="0"]').bounding_box()
    assert handle is not None
    page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
    page.mouse.down()
    page.mouse.move(*at(0.2, 0.4), steps=6)
    page.mouse.up()
    editor.locator(".zone-item[data-kind=mask] .zone-remove").click()
    # per-label thresholds: two rows for one label are refused before anything is sent
    for label, score in (("person", "0.6"), ("person", "0.7")):
        page.click("#threshold-add")
        last = editor.locator(".threshold-row").last
        last.locator("[name=label]").fill(label)
        last.locator("[name=min_score]").fill(score)
    last.locator("[name=min_area]").fill("0.01")
    page.click("#zone-save")
    expect(editor.locator("#zone-error")).to_have_text("label person has two threshold rows")
    editor.locator(".threshold-row").first.locator(".threshold-remove").click()
    page.click("#zone-save")
    expect(editor).to_have_count(0)
    expect(row.locator(".detection")).to_have_text("1 zone · 1 threshold")
    moved = _detection(served, "gate-z")
    assert moved is not None and moved["masks"] == []
    assert _near(moved["zones"][0]["polygon"], [(0.2, 0.4), *zone[1:]]), moved
    assert moved["thresholds"] == {"person": {"min_score": 0.7, "min_area": 0.01}}

    # everything removed: the camera has no detection left
    row.get_by_role("button", name="Zones").click()
    expect(editor.locator(".threshold-row [name=min_score]")).to_have_value("0.7")
    editor.locator(".zone-item[data-kind=zone] .zone-remove").click()
    editor.locator(".threshold-remove").click()
    page.click("#zone-save")
    expect(editor).to_have_count(0)
    expect(row.locator(".detection")).to_have_count(0)
    assert _detection(served, "gate-z") is None
    assert page.evaluate("window.__xss") is None


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_config_camera_is_read_only_and_a_camera_without_a_picture_can_still_be_drawn_on(
    served: Served, new_page: Callable[..., Page], login: Callable[[Page, str], None]
) -> None:
    served.add_camera("far-away", "Far away", "grid-b")  # rtsp://10.9.0.x: nothing answers
    served.add_user("ada", "admin")
    page = new_page()
    login(page, "ada")
    page.goto(f"{served.url}/ui/#/admin/cameras")
    page.locator('.table-cameras tr[data-id="cam-bridge"]').get_by_role("button", name="Zones").click()
    editor = page.locator("dialog.zone-editor")
    expect(editor).to_contain_text("From the config file")
    expect(editor.locator("#zone-save")).to_have_count(0)
    expect(editor.locator("#zone-new")).to_have_count(0)
    page.click("#zone-close")
    expect(editor).to_have_count(0)

    page.locator('.table-cameras tr[data-id="far-away"]').get_by_role("button", name="Zones").click()
    expect(editor).to_have_attribute("data-picture", "failed", timeout=30_000)
    expect(editor.locator(".zone-picture-note")).to_contain_text("No picture from the camera")
    page.select_option("#zone-kind", "motion_mask")
    page.click("#zone-new")
    stage = page.locator("#zone-stage").bounding_box()
    assert stage is not None and stage["height"] > 100  # a blank 16:9 frame to draw on
    for x, y in [(0.0, 0.0), (0.3, 0.0), (0.3, 0.2)]:
        page.mouse.click(stage["x"] + x * stage["width"] + 1, stage["y"] + y * stage["height"] + 1)
    expect(editor.locator("#zone-hint")).to_contain_text("3 so far")  # the very corner too
    page.keyboard.press("Enter")
    page.click("#zone-close")  # unsaved: closing asks first
    expect(editor.locator("#zone-close")).to_have_text("Discard changes?")
    expect(editor).to_have_count(1)
    page.click("#zone-save")
    expect(editor).to_have_count(0)
    saved = _detection(served, "far-away")
    assert saved is not None and len(saved["motion_masks"]) == 1
    assert _near(saved["motion_masks"][0], [(0.0, 0.0), (0.3, 0.0), (0.3, 0.2)]), saved

    # a change dropped on purpose: Escape arms, Close discards, the database keeps what was saved
    far = page.locator('.table-cameras tr[data-id="far-away"]')
    expect(far.locator(".detection")).to_have_text("1 motion mask")  # the table has been reloaded
    far.get_by_role("button", name="Zones").click()
    editor.locator(".zone-item .zone-remove").click()
    page.keyboard.press("Escape")
    expect(editor.locator("#zone-error")).to_contain_text("Unsaved changes")
    page.click("#zone-close")
    expect(editor).to_have_count(0)
    assert _detection(served, "far-away") == saved
