"""The service worker in a real browser: it is registered for /ui/, and a Web Push message in the
dispatcher's own payload format (`push_payload`) becomes a notification that leads to the alert. The push
is handed to the worker through the DevTools protocol (a real push service is out of reach here), and a
click on the notification is dispatched in the worker (headless Chromium shows none to click)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from playwright.sync_api import Page, expect

from alerts.notifiers.base import Notification
from alerts.notifiers.webpush import push_payload

if TYPE_CHECKING:
    from conftest import Served

NOTIFICATIONS = """async () => {
  const registration = await navigator.serviceWorker.ready;
  return (await registration.getNotifications()).map(n => ({
    title: n.title, body: n.body, tag: n.tag, data: n.data, requireInteraction: n.requireInteraction,
  }));
}"""


def _notifications_until(page: Page, done: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    """The notifications shown, once `done` says so (wait_for_function would not wait: the list comes from a
    promise, and a promise is truthy at once; evaluate awaits it)."""
    deadline = time.monotonic() + 10
    while not done(shown := page.evaluate(NOTIFICATIONS)):
        assert time.monotonic() < deadline, f"notifications shown: {shown}"
        page.wait_for_timeout(50)
    return list(shown)


def _notification(alert_id: str, url: str) -> Notification:
    return Notification(
        dedupe_key=f"inc-1:new:{alert_id}", kind="new", incident_id="inc-1", alert_id=alert_id,
        severity="critical", label="fire", score=0.93, camera_id="cam-bridge", camera_name="Bridge road",
        village="riverside", grid="grid-a", team="team-a", title="Fire at Bridge road",
        body="fire (0.93) at 12:00:00 in village riverside, grid grid-a",
        created_at="2026-12-01T12:00:00+00:00",
        snapshot_url=f"{url}/api/v1/alerts/{alert_id}/snapshot", url=f"{url}/#/alerts/{alert_id}",
    )  # fmt: skip


def test_the_service_worker_shows_a_push_as_a_notification_leading_to_the_alert(
    served: Served, new_page: Callable[..., Page], login: Callable[[Page, str], None]
) -> None:
    served.add_user("pat", "patrol", team="team-a")
    page = new_page(viewport=(390, 844))
    page.context.grant_permissions(["notifications"], origin=served.url)
    cdp = page.context.new_cdp_session(page)
    registrations: list[dict[str, Any]] = []
    cdp.on("ServiceWorker.workerRegistrationUpdated", lambda e: registrations.extend(e["registrations"]))
    cdp.send("ServiceWorker.enable")
    login(page, "pat")
    scope = page.evaluate("navigator.serviceWorker.ready.then(r => r.scope)")
    assert scope == f"{served.url}/ui/"
    deadline = time.monotonic() + 10
    while not any(r["scopeURL"] == scope for r in registrations):
        assert time.monotonic() < deadline, "the service worker's registration was not reported"
        page.wait_for_timeout(50)
    registration_id = next(r["registrationId"] for r in registrations if r["scopeURL"] == scope)

    alert_id = "a" * 32
    payload = push_payload(_notification(alert_id, served.url)).decode()
    cdp.send(
        "ServiceWorker.deliverPushMessage",
        {"origin": served.url, "registrationId": registration_id, "data": payload},
    )
    [shown] = _notifications_until(page, lambda shown: len(shown) > 0)
    assert shown["title"] == "Fire at Bridge road"
    assert shown["body"].startswith("fire (0.93) at 12:00:00")
    assert shown["tag"] == "inc-1"  # a later push about the incident replaces this one
    assert shown["requireInteraction"] is True  # critical: stays until seen
    assert shown["data"]["target"] == f"/ui/#/alerts/{alert_id}"

    # a push that is not JSON still shows, with the text as its body; a foreign URL is not followed
    cdp.send(
        "ServiceWorker.deliverPushMessage",
        {"origin": served.url, "registrationId": registration_id, "data": "plain words"},
    )
    _notifications_until(page, lambda shown: any(n["body"] == "plain words" for n in shown))
    evil = '{"title": "x", "url": "https://evil.example/phish"}'
    cdp.send(
        "ServiceWorker.deliverPushMessage",
        {"origin": served.url, "registrationId": registration_id, "data": evil},
    )
    shown_all = _notifications_until(page, lambda shown: any(n["title"] == "x" for n in shown))
    targets = {n["title"]: n["data"]["target"] for n in shown_all}
    assert targets["x"] == "/ui/"

    # a click on the first notification, with the page open: the worker's own notificationclick handler
    # runs (dispatched in the worker: headless Chromium shows no notification to click) and the page shows
    # the alert; the notification is closed
    [worker] = [w for w in page.context.service_workers if w.url.endswith("/ui/sw.js")]
    clicked = worker.evaluate(
        """async (id) => {
          const shown = await self.registration.getNotifications();
          const notification = shown.find((n) => n.data && n.data.alert_id === id);
          self.dispatchEvent(new NotificationEvent("notificationclick", { notification }));
          return notification.data.target;
        }""",
        alert_id,
    )
    assert clicked == f"/ui/#/alerts/{alert_id}"
    expect(page).to_have_url(f"{served.url}/ui/#/alerts/{alert_id}")
    _notifications_until(page, lambda shown: all(n["data"].get("alert_id") != alert_id for n in shown))
    expect(page.locator(".detail .error")).to_have_text("No such alert (or not in your grids).")
