"""The operator dashboard in a real browser: logging in, a newly published alert on the screen within 2 s
without a reload, acknowledging it (checked in the database), the camera status wall, the filters and
the response times."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from playwright.sync_api import Page, expect

from gridwatch.camera_registry import CameraFields
from ingest.simulator.server import RtspSimulator

if TYPE_CHECKING:
    from conftest import Served


def _card(alert_id: str) -> str:
    return f'.alert-card[data-alert-id="{alert_id}"]'


def _has(cls: str) -> re.Pattern[str]:
    """For `to_have_class`: the element has this class among others."""
    return re.compile(rf"(^|\s){re.escape(cls)}(\s|$)")


def test_a_published_alert_appears_within_two_seconds_and_is_acknowledged(
    served: Served,
    new_page: Callable[..., Page],
    login: Callable[[Page, str], None],
    shot: Callable[[Page, str], object],
) -> None:
    served.add_user("otto", "operator", name="Otto Operator")
    older, _ = served.add_alert(
        camera="cam-barn", grid="grid-b", label="person", severity="normal",
        at=datetime.now(UTC) - timedelta(minutes=20), status="acknowledged",
    )  # fmt: skip
    page = new_page()
    login(page, "otto")
    expect(page.locator("#who-name")).to_have_text("Otto Operator")
    expect(page).to_have_url(f"{served.url}/ui/#/operator")
    expect(page.locator(_card(older.id))).to_be_visible()
    expect(page.locator(".feed-state")).to_have_attribute("data-state", "live")
    served.wait_for_subscribers()

    alert, incident_id = served.add_alert(
        camera="cam-bridge", grid="grid-a", label="fire", severity="critical"
    )
    sent = time.monotonic()
    served.publish(alert)
    card = page.locator(_card(alert.id))
    card.wait_for(state="visible", timeout=2000)
    assert time.monotonic() - sent < 2.0
    expect(card.locator(".alert-label")).to_have_text("Fire")
    expect(card.locator(".meta-camera")).to_have_text("Bridge road")
    expect(card.locator(".meta-village")).to_have_text("Riverside")
    expect(card.locator(".meta-grid")).to_have_text("Riverside east (grid-a)")
    expect(card.locator(".sev-badge")).to_have_text("critical")
    expect(card).to_have_class(_has("sev-critical"))
    expect(card.locator(".status-pill")).to_have_text("New")
    # the newest first, above the older alert; its picture comes through the presigned redirect
    assert page.locator(".alert-card").first.get_attribute("data-alert-id") == alert.id
    page.wait_for_function(
        "id => { const i = document.querySelector(`[data-alert-id='${id}'] img`);"
        " return i && i.complete && i.naturalWidth > 0; }",
        arg=alert.id,
    )

    card.locator("input.note").fill("smoke seen from the road, calling the fire brigade")
    card.locator("button[data-action=acknowledge]").click()
    expect(page.locator(_card(alert.id)).locator(".status-pill")).to_have_text("Acknowledged")
    expect(page.locator(_card(alert.id)).locator("button[data-action=acknowledge]")).to_be_disabled()
    assert incident_id is not None
    incident = served.db.get_incident(incident_id)
    assert incident is not None and incident.status == "acknowledged" and incident.acknowledged_at is not None
    [action] = served.db.list_incident_actions(incident.id)
    assert (action.action, action.user_id) == ("acknowledged", "otto")
    assert action.note == "smoke seen from the road, calling the fire brigade"
    # a step that would go back is not offered; the next ones are
    expect(page.locator(_card(alert.id)).locator("button[data-action=dispatch]")).to_be_enabled()
    shot(page, "operator-acknowledged")


def test_the_camera_wall_puts_failed_cameras_first_in_red_and_the_filters_narrow_the_list(
    served: Served,
    new_page: Callable[..., Page],
    login: Callable[[Page, str], None],
    shot: Callable[[Page, str], object],
) -> None:
    served.add_user("otto", "operator")
    served.camera_state("cam-bridge", "online")
    served.camera_state("cam-school", "online")
    served.camera_state("cam-barn", "offline", error="connection refused by 10.0.0.21:554")
    served.camera_state("cam-ridge", "auth_failed", error="401 Unauthorized")
    fire, _ = served.add_alert(camera="cam-bridge", grid="grid-a", label="fire", severity="critical")
    person, _ = served.add_alert(
        camera="cam-barn",
        grid="grid-b",
        label="person",
        severity="low",
        at=datetime.now(UTC) - timedelta(minutes=3),
    )
    done, _ = served.add_alert(
        camera="cam-school", grid="grid-a", label="car", severity="normal",
        at=datetime.now(UTC) - timedelta(minutes=9), status="resolved",
    )  # fmt: skip
    page = new_page()
    login(page, "otto")
    tiles = page.locator(".cam-tile")
    expect(tiles).to_have_count(4)
    states = [tiles.nth(i).get_attribute("data-state") for i in range(4)]
    assert sorted(states[:2]) == ["auth_failed", "offline"] and states[2:] == ["online", "online"]
    for i in range(2):
        expect(tiles.nth(i)).to_have_class(_has("cam-bad"))
        assert (
            page.evaluate("el => getComputedStyle(el).borderColor", tiles.nth(i).element_handle())
            == "rgb(252, 165, 165)"
        )
    expect(page.locator(".cam-tile.cam-bad")).to_have_count(2)
    expect(page.locator("[data-chip=cameras] b")).to_have_text("2/4")
    expect(page.locator(".cam-tile[data-state=offline] .cam-detail")).to_have_text(
        "connection refused by 10.0.0.21:554"
    )

    expect(page.locator(".alert-card")).to_have_count(3)
    page.select_option("select[name=severity]", "critical")
    expect(page.locator(".alert-card")).to_have_count(1)
    expect(page.locator(".alert-card").first).to_have_attribute("data-alert-id", fire.id)
    page.select_option("select[name=severity]", "")
    page.select_option("select[name=grid]", "grid-b")
    expect(page.locator(".alert-card")).to_have_count(1)
    expect(page.locator(".alert-card").first).to_have_attribute("data-alert-id", person.id)
    page.select_option("select[name=grid]", "")
    page.select_option("select[name=status]", "open")
    expect(page.locator(".alert-card")).to_have_count(2)
    expect(page.locator(_card(done.id))).to_have_count(0)
    page.select_option("select[name=status]", "resolved")
    expect(page.locator(".alert-card")).to_have_count(1)
    expect(page.locator(_card(done.id))).to_be_visible()
    page.select_option("select[name=status]", "")
    page.select_option("select[name=label]", "person")
    expect(page.locator(".alert-card")).to_have_count(1)

    # a live alert that the filter excludes is kept out of the list, one it admits comes in
    served.wait_for_subscribers()
    car, _ = served.add_alert(camera="cam-school", grid="grid-a", label="car", severity="high")
    walker, _ = served.add_alert(camera="cam-school", grid="grid-a", label="person", severity="high")
    served.publish(car)
    served.publish(walker)
    page.locator(_card(walker.id)).wait_for(timeout=2000)
    expect(page.locator(_card(car.id))).to_have_count(0)

    # response times as the page loaded them: grid-a had two incidents, the car one acknowledged in 40 s
    row = page.locator(".response-times tr[data-grid=grid-a]")
    expect(row).to_be_visible()
    expect(row.locator("td").nth(1)).to_have_text("1/2")
    expect(row.locator("td").nth(2)).to_have_text("40s")
    shot(page, "operator-wall")


def test_a_filter_chosen_while_the_dashboard_still_loads_is_kept(
    served: Served, new_page: Callable[..., Page], login: Callable[[Page, str], None]
) -> None:
    """The filter selects are built once: the end of the first load only refills the label and grid
    choices. (Replacing them once dropped a choice made meanwhile: CI saw grid b's filter stay on after
    "Any grid" had been picked.)"""
    served.add_user("otto", "operator")
    served.add_alert(camera="cam-bridge", grid="grid-a", label="fire", severity="critical")
    served.add_alert(camera="cam-barn", grid="grid-b", label="person", severity="low")
    page = new_page()
    login(page, "otto")
    status = page.wait_for_selector("select[name=status]")
    grid = page.wait_for_selector("select[name=grid]")
    assert status is not None and grid is not None
    expect(page.locator(".page.operator")).to_have_attribute("data-loaded", "true")
    assert status.evaluate("el => el.isConnected") and grid.evaluate("el => el.isConnected")
    expect(page.locator(".alert-card")).to_have_count(2)
    grid.select_option("grid-b")  # the very elements found before the load ended still filter
    expect(page.locator(".alert-card")).to_have_count(1)
    grid.select_option("")
    status.select_option("open")
    expect(page.locator(".alert-card")).to_have_count(2)


def test_an_operator_looks_at_a_camera_from_the_wall(
    served: Served,
    rtsp: RtspSimulator,
    new_page: Callable[..., Page],
    login: Callable[[Page, str], None],
    shot: Callable[[Page, str], object],
) -> None:
    """The wall's "View" shows the camera's picture now, grabbed from the real RTSP stream; a camera that
    gives none says why."""
    fields = CameraFields(id="gate-live", name="Gate live", grid="grid-a", url=rtsp.url("gate"))
    served.registry.register(fields, probe=False, at=datetime.now(UTC))
    served.add_user("otto", "operator")
    page = new_page()
    login(page, "otto")
    page.locator('.cam-tile[data-camera-id="gate-live"] .cam-view').click()
    view = page.locator("dialog.camera-view")
    expect(view).to_have_attribute("data-picture", "loaded", timeout=30_000)
    expect(view.locator("h3")).to_have_text("Gate live now")
    expect(view.locator(".camera-view-note")).to_contain_text("320×240")
    assert page.evaluate("document.querySelector('.camera-view-picture').naturalWidth") == 320
    shot(page, "operator-camera-view", full_page=False)
    view.locator("#camera-view-again").click()
    expect(view).to_have_attribute("data-picture", "loaded", timeout=30_000)
    view.locator("#camera-view-close").click()
    expect(view).to_have_count(0)

    page.locator('.cam-tile[data-camera-id="cam-bridge"] .cam-view').click()  # 10.0.0.11: nothing answers
    expect(view).to_have_attribute("data-picture", "failed", timeout=30_000)
    expect(view.locator(".camera-view-note")).to_contain_text("No picture from the camera: ")
    expect(view.locator(".camera-view-picture")).to_be_hidden()


def test_fire_alerts_sound_the_alarm_once_sound_is_on(
    served: Served, new_page: Callable[..., Page], login: Callable[[Page, str], None]
) -> None:
    served.add_user("otto", "operator")
    page = new_page()
    login(page, "otto")
    toggle = page.locator(".sound-toggle")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    expect(page.locator(".feed-state")).to_have_attribute("data-state", "live")
    served.wait_for_subscribers()
    quiet, _ = served.add_alert(camera="cam-bridge", grid="grid-a", label="fire")
    served.publish(quiet)
    page.locator(_card(quiet.id)).wait_for(timeout=2000)
    assert page.evaluate("window.__gridwatchBeeps || 0") == 0  # sound is off

    toggle.click()  # the gesture the browser needs to start audio
    expect(toggle).to_have_attribute("aria-pressed", "true")
    beeps = page.evaluate("window.__gridwatchBeeps")  # the toggle plays one short test beep
    assert page.evaluate("() => localStorage.getItem('gridwatch.sound')") == "on"
    person, _ = served.add_alert(camera="cam-bridge", grid="grid-a", label="person", severity="normal")
    smoke, _ = served.add_alert(camera="cam-school", grid="grid-a", label="smoke", severity="high")
    served.publish(person)
    served.publish(smoke)
    page.locator(_card(smoke.id)).wait_for(timeout=2000)
    page.locator(_card(person.id)).wait_for(timeout=2000)
    assert page.evaluate("window.__gridwatchBeeps") == beeps + 1  # smoke beeps, the person does not
