"""The patrol view in a real browser on a phone-sized screen: a patrol member sees the open alerts of their
grid, never another grid's (neither in the first list nor from the live feed), acts on them with big
buttons, plays the clip, and is told when a clip is still recording or push is not set up."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from playwright.sync_api import Page, expect

if TYPE_CHECKING:
    from conftest import Served

PHONE = (390, 844)


def _card(alert_id: str) -> str:
    return f'.alert-card[data-alert-id="{alert_id}"]'


def test_a_patrol_member_sees_their_grid_only_and_never_another_grids_alerts(
    served: Served,
    new_page: Callable[..., Page],
    login: Callable[[Page, str], None],
    shot: Callable[[Page, str], object],
) -> None:
    served.add_user("pat", "patrol", team="team-a", name="Pat Patrol")
    mine, _ = served.add_alert(
        camera="cam-bridge", grid="grid-a", label="fire", at=datetime.now(UTC) - timedelta(minutes=2)
    )
    theirs, _ = served.add_alert(
        camera="cam-barn", grid="grid-b", label="smoke", at=datetime.now(UTC) - timedelta(minutes=1)
    )
    closed, _ = served.add_alert(camera="cam-school", grid="grid-a", label="person", status="resolved")
    page = new_page(viewport=PHONE, is_mobile=True, has_touch=True)
    login(page, "pat")
    expect(page).to_have_url(f"{served.url}/ui/#/patrol")
    expect(page.locator("#nav a")).to_have_text(["My grid"])  # no dashboard, no admin
    expect(page.locator(".patrol-grids")).to_have_text("Grid: Riverside east")
    expect(page.locator(_card(mine.id))).to_be_visible()
    expect(page.locator(".alert-card")).to_have_count(1)  # the resolved one is not open
    text = page.locator("#view").inner_text()
    for other in ("Old barn", "cam-barn", "Hilltop", "grid-b", "Smoke"):
        assert other not in text
    assert page.locator(_card(theirs.id)).count() == 0 and page.locator(_card(closed.id)).count() == 0

    # touch-sized buttons
    button = page.locator(_card(mine.id)).locator("button[data-action=acknowledge]")
    box = button.bounding_box()
    assert box is not None and box["height"] >= 48

    # the live feed: grid B's alert (published first) never shows, grid A's arrives within 2 s
    expect(page.locator(".feed-state")).to_have_attribute("data-state", "live")
    served.wait_for_subscribers()
    live_b, _ = served.add_alert(camera="cam-ridge", grid="grid-b", label="fire")
    live_a, _ = served.add_alert(camera="cam-school", grid="grid-a", label="person", severity="high")
    served.publish(live_b)
    served.publish(live_a)
    page.locator(_card(live_a.id)).wait_for(timeout=2000)
    page.wait_for_timeout(500)
    assert page.locator(_card(live_b.id)).count() == 0
    text = page.locator("#view").inner_text()
    assert "Ridge lookout" not in text and "cam-ridge" not in text and "grid-b" not in text
    expect(page.locator(".alert-card")).to_have_count(2)
    shot(page, "patrol")

    # acknowledge, on scene, resolve: the card leaves the list of open alerts
    card = page.locator(_card(mine.id))
    card.locator("button[data-action=acknowledge]").tap()
    expect(card.locator(".status-pill")).to_have_text("Acknowledged")
    card.locator("input.note").fill("on my way")
    card.locator("button[data-action=on_scene]").tap()
    expect(card.locator(".status-pill")).to_have_text("On scene")
    card.locator("button[data-action=resolve]").tap()
    expect(page.locator(_card(mine.id))).to_have_count(0)
    stored = served.db.get_alert(mine.id)
    assert stored is not None and stored.incident_id is not None
    incident = served.db.get_incident(stored.incident_id)
    assert incident is not None and incident.status == "resolved"
    actions = served.db.list_incident_actions(incident.id)
    assert [(a.action, a.user_id, a.note) for a in actions] == [
        ("acknowledged", "pat", None),
        ("on_scene", "pat", "on my way"),
        ("resolved", "pat", None),
    ]


def test_the_clip_plays_and_a_clip_still_recording_says_so(
    served: Served,
    new_page: Callable[..., Page],
    login: Callable[[Page, str], None],
    clip_mp4: bytes,
    shot: Callable[[Page, str], object],
) -> None:
    served.add_user("pat", "patrol", team="team-a")
    recorded, _ = served.add_alert(camera="cam-bridge", grid="grid-a", label="person", clip=clip_mp4)
    recording, _ = served.add_alert(camera="cam-school", grid="grid-a", label="car", clip_status="pending")
    page = new_page(viewport=PHONE, is_mobile=True, has_touch=True)
    login(page, "pat")
    expect(page.locator(_card(recording.id)).locator(".clip-missing")).to_have_text("Clip still recording…")
    card = page.locator(_card(recorded.id))
    card.locator(".play-clip").tap()
    video = card.locator("video")
    expect(video).to_have_attribute("src", f"/api/v1/alerts/{recorded.id}/clip")
    # through the 307 to the store's presigned URL (the CSP's media-src lets it in) and decoded
    page.wait_for_function(
        "el => el.readyState >= 2 && el.videoWidth === 320 && el.duration > 1.5", arg=video.element_handle()
    )

    # this server has no Web Push notifier: the button says so instead of failing silently
    page.locator(".push-button").tap()
    expect(page.locator(".push-status")).to_have_text("Push notifications are not set up on this server.")
    shot(page, "patrol-clip")
