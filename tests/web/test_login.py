"""Logging in and out in a real browser, first-run setup with the setup token of the server's log, a
notification's link to an alert surviving the login, and what each role is offered."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Page, expect

if TYPE_CHECKING:
    from conftest import Served


def test_a_wrong_password_is_refused_and_a_logout_ends_the_session(
    served: Served, new_page: Callable[..., Page], shot: Callable[[Page, str], object]
) -> None:
    served.add_user("otto", "operator", name="Otto Operator")
    page = new_page()
    page.goto("/")
    expect(page).to_have_url(f"{served.url}/ui/")
    expect(page.locator("#login-form")).to_be_visible()
    expect(page.locator("#topbar")).to_be_hidden()
    shot(page, "login")
    page.fill("#f-login-username", "otto")
    page.fill("#f-login-password", "not the password")
    page.click("#login-form button[type=submit]")
    expect(page.locator(".form-error")).to_have_text("Wrong user id or password.")
    expect(page.locator("#f-login-password")).to_have_value("")

    page.fill("#f-login-password", served.password)
    page.press("#f-login-password", "Enter")
    expect(page.locator("#who-name")).to_have_text("Otto Operator")
    expect(page.locator("#who-role")).to_have_text("operator")
    expect(page.locator("#nav a")).to_have_text(["Dashboard", "Patrol view"])  # no admin pages
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["gw_session"]["httpOnly"] and cookies["gw_session"]["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # scripts never see the session

    page.goto("/ui/#/admin/users")  # not an admin: back to the dashboard
    expect(page).to_have_url(f"{served.url}/ui/#/operator")

    page.click("#logout")
    expect(page.locator("#login-form")).to_be_visible()
    status = page.evaluate("fetch('/api/v1/session').then(r => r.status)")
    assert status == 401
    page.reload()
    expect(page.locator("#login-form")).to_be_visible()


def test_first_run_setup_creates_the_admin_and_logs_in(
    served: Served,
    new_page: Callable[..., Page],
    caplog: pytest.LogCaptureFixture,
    shot: Callable[[Page, str], object],
) -> None:
    logged = " ".join(r.getMessage() for r in caplog.get_records("setup"))
    match = re.search(r'"setup_token": "([^"]+)"', logged)
    assert match, "the server logs a setup token while no admin can log in"
    page = new_page()
    page.goto("/")
    expect(page.locator(".setup-hint")).to_contain_text("No admin can log in yet.")
    page.get_by_role("button", name="First run: create the first admin").click()
    expect(page.locator("#setup-form")).to_be_visible()
    shot(page, "setup")
    page.fill("#f-setup-setup_token", "wrong-token")
    page.fill("#f-setup-user_id", "chief")
    page.fill("#f-setup-name", "Chief Admin")
    page.fill("#f-setup-password", "a long and good passphrase")
    page.click("#setup-form button[type=submit]")
    expect(page.locator("#setup-form .form-error")).to_have_text("wrong setup token")
    page.fill("#f-setup-setup_token", match.group(1))
    page.click("#setup-form button[type=submit]")
    expect(page.locator("#who-name")).to_have_text("Chief Admin")
    expect(page.locator("#nav a")).to_have_text(["Dashboard", "Patrol view", "Admin"])
    user = served.db.get_user("chief")
    assert user is not None and user.role == "admin" and user.password_hash
    page.click("#logout")
    expect(page.locator("#login-form")).to_be_visible()
    expect(page.locator(".setup-hint")).to_have_count(0)  # done: the login page offers it no more


def test_a_link_to_an_alert_survives_the_login(
    served: Served, new_page: Callable[..., Page], shot: Callable[[Page, str], object]
) -> None:
    served.add_user("pat", "patrol", team="team-a", name="Pat Patrol")
    alert, incident_id = served.add_alert(camera="cam-bridge", grid="grid-a", label="smoke", severity="high")
    other, _ = served.add_alert(camera="cam-barn", grid="grid-b", label="fire")
    assert incident_id is not None
    served.db.set_incident_status(
        incident_id, expected="new", status="acknowledged", user_id="pat", note="seen"
    )
    page = new_page(viewport=(390, 844))
    page.goto(f"/#/alerts/{alert.id}")  # the form of the links in notifications: {public_url}/#/alerts/ID
    expect(page).to_have_url(f"{served.url}/ui/#/alerts/{alert.id}")
    page.fill("#f-login-username", "pat")
    page.fill("#f-login-password", served.password)
    page.click("#login-form button[type=submit]")
    card = page.locator(f'.detail .alert-card[data-alert-id="{alert.id}"]')
    expect(card.locator(".alert-label")).to_have_text("Smoke")
    expect(card.locator(".status-pill")).to_have_text("Acknowledged")
    expect(page.locator(".actions-log li")).to_have_count(1)
    expect(page.locator(".actions-log li").first).to_contain_text("Acknowledged")
    expect(page.locator(".note-text")).to_have_text("seen")
    expect(card.locator(".clip-missing")).to_have_text("Clip still recording…")
    page.wait_for_function(
        "() => { const i = document.querySelector('.detail img'); return i && i.naturalWidth > 0; }"
    )
    shot(page, "alert-detail")
    page.goto(f"/ui/#/alerts/{other.id}")  # another grid's alert: as if there were none
    expect(page.locator(".detail .error")).to_have_text("No such alert (or not in your grids).")


def test_an_ended_session_sends_the_browser_back_to_the_login(
    served: Served, new_page: Callable[..., Page], login: Callable[[Page, str], None]
) -> None:
    served.add_user("otto", "operator")
    page = new_page()
    login(page, "otto")
    expect(page.locator(".feed-state")).to_have_attribute("data-state", "live")
    served.db.delete_sessions_of_user("otto")  # an admin reset the password, say
    page.select_option("select[name=severity]", "critical")  # the next request finds the session gone
    expect(page.locator("#login-form .form-error")).to_have_text("Your session has ended; log in again.")
    expect(page.locator("#topbar")).to_be_hidden()
