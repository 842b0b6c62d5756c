"""The admin pages in a real browser: registering a camera against a real RTSP server and seeing what its
probe found, editing, re-probing and deleting it; a hostile camera name shown as text everywhere; the CSV
import with its per-row errors; villages, grids, teams (roster) and users."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from playwright.sync_api import Page, expect

from ingest.simulator.server import RtspSimulator

if TYPE_CHECKING:
    from conftest import Served

CAMERA_PASSWORD = "Cam-Pa55-w0rd"
XSS = "<img src=x onerror=window.__xss=1>"
XSS_LABEL = "<svg onload=window.__xss=2>"


def _row(table: str, row_id: str) -> str:
    return f'.table-{table} tr[data-id="{row_id}"]'


def _register(page: Page, camera_id: str, name: str, grid: str, url: str) -> None:
    page.fill("#f-cameras-id", camera_id)
    page.fill("#f-cameras-name", name)
    page.select_option("#f-cameras-grid", grid)
    page.fill("#f-cameras-url", url)
    page.click("#create-cameras button[type=submit]")


def test_an_admin_registers_a_camera_and_sees_its_probe(
    served: Served,
    rtsp: RtspSimulator,
    new_page: Callable[..., Page],
    login: Callable[[Page, str], None],
    shot: Callable[[Page, str], object],
) -> None:
    served.add_user("ada", "admin", name="Ada Admin")
    page = new_page()
    login(page, "ada")
    expect(page).to_have_url(f"{served.url}/ui/#/operator")  # an admin lands on the dashboard
    page.click("#nav >> text=Admin")
    expect(page).to_have_url(f"{served.url}/ui/#/admin/cameras")
    expect(page.locator(".table-cameras tbody tr")).to_have_count(4)
    config_row = page.locator(_row("cameras", "cam-bridge"))
    expect(config_row.locator("td[data-col=source]")).to_have_text("config")
    expect(config_row.locator("td[data-col=url]")).to_have_text("rtsp://viewer:***@10.0.0.11/stream2")
    expect(config_row.get_by_role("button", name="Edit")).to_be_disabled()
    expect(config_row.get_by_role("button", name="Delete")).to_be_disabled()

    url = rtsp.url("gate").replace("rtsp://", f"rtsp://admin:{CAMERA_PASSWORD}@")
    _register(page, "gate-north", "North gate", "grid-a", url)
    expect(page.locator(".busy")).to_contain_text("probing")
    result = page.locator(".probe-result")
    expect(result).to_have_text(re.compile(r"^320×240 · (9\.[5-9]|10\.[0-4]) fps · h264"), timeout=30_000)
    row = page.locator(_row("cameras", "gate-north"))
    expect(row.locator(".probe-text")).to_have_text(re.compile(r"^320×240 · (9\.[5-9]|10\.[0-4]) fps"))
    expect(row.locator("td[data-col=url]")).to_have_text(
        re.compile(r"^rtsp://admin:\*\*\*@127\.0\.0\.1:\d+/gate$")
    )
    expect(row.locator("td[data-col=grid]")).to_contain_text("grid-a")
    expect(row.locator("td[data-col=source]")).to_have_text("api")
    assert CAMERA_PASSWORD not in page.content()
    record = served.db.get_camera("gate-north")
    assert record is not None and record.probe is not None
    assert (record.probe["ok"], record.probe["width"], record.probe["height"]) == (True, 320, 240)
    assert (record.village, record.source) == ("riverside", "api")
    shot(page, "admin-cameras")

    # a camera that cannot be reached is registered with the reason
    dead = rtsp.url("gate").rsplit("/", 1)[0] + "/no-such-mount"
    _register(page, "dead-cam", "Dead end", "grid-b", dead)
    failed = page.locator(".result-box [data-probe=failed]")
    expect(failed).to_be_visible(timeout=30_000)
    bad = page.locator(_row("cameras", "dead-cam")).locator(".probe-bad .probe-text")
    expect(bad).to_have_text(re.compile(r"^\w+: .+"))
    stored = served.db.get_camera("dead-cam")
    assert stored is not None and stored.probe is not None and stored.probe["ok"] is False
    assert bad.inner_text().startswith(f"{stored.probe['error_kind']}: ")

    # edit: the name and the detect rate change, the URL stays
    row.get_by_role("button", name="Edit").click()
    form = page.locator('form[data-editing="gate-north"]')
    form.locator("input[name=name]").fill("North gate (east post)")
    form.locator("input[name=detect_fps]").fill("4")
    form.get_by_role("button", name="Save").click()
    expect(row.locator(".camera-name")).to_have_text("North gate (east post)")
    edited = served.db.get_camera("gate-north")
    assert edited is not None and edited.detect_fps == 4.0 and edited.name == "North gate (east post)"

    # re-probe records a fresh probe
    before = edited.probed_at
    row.get_by_role("button", name="Re-probe").click()
    expect(page.locator(".toast-ok").last).to_contain_text("320×240", timeout=30_000)
    reprobed = served.db.get_camera("gate-north")
    assert reprobed is not None and reprobed.probed_at is not None and before is not None
    assert reprobed.probed_at > before

    # delete asks for a second click
    delete = page.locator(_row("cameras", "dead-cam")).locator("button.btn-danger")
    delete.click()
    expect(delete).to_have_text("Confirm?")
    assert served.db.get_camera("dead-cam") is not None
    delete.click()
    expect(page.locator(_row("cameras", "dead-cam"))).to_have_count(0)
    assert served.db.get_camera("dead-cam") is None


def test_a_hostile_camera_name_and_label_are_shown_as_text(
    served: Served,
    rtsp: RtspSimulator,
    new_page: Callable[..., Page],
    login: Callable[[Page, str], None],
    shot: Callable[[Page, str], object],
) -> None:
    served.add_user("ada", "admin")
    page = new_page()
    login(page, "ada")
    page.goto("/ui/#/admin/cameras")
    _register(page, "xss-cam", XSS, "grid-a", rtsp.url("gate"))
    expect(page.locator(".probe-result")).to_be_visible(timeout=30_000)
    name = page.locator(_row("cameras", "xss-cam")).locator(".camera-name")
    expect(name).to_have_text(XSS)
    expect(page.locator(".result-box")).to_contain_text(f"Registered {XSS} (xss-cam)")
    assert page.locator("img[src=x]").count() == 0
    assert page.evaluate("typeof window.__xss") == "undefined"

    # on the dashboard: the status wall, and a live alert whose label is markup too
    page.goto("/ui/#/operator")
    tile = page.locator('.cam-tile[data-camera-id="xss-cam"] .cam-name')
    expect(tile).to_have_text(XSS)
    expect(page.locator(".feed-state")).to_have_attribute("data-state", "live")
    served.wait_for_subscribers()
    alert, _ = served.add_alert(camera="xss-cam", grid="grid-a", label=XSS_LABEL, severity="high")
    served.publish(alert)
    card = page.locator(f'.alert-card[data-alert-id="{alert.id}"]')
    card.wait_for(timeout=2000)
    expect(card.locator(".meta-camera")).to_have_text(XSS)
    expect(card.locator(".alert-label")).to_have_text(XSS_LABEL)  # the first letter is "<": no case change
    page.wait_for_timeout(300)
    assert page.locator("img[src=x]").count() == 0 and page.locator("#view svg").count() == 0
    assert page.evaluate("typeof window.__xss") == "undefined"
    shot(page, "xss-as-text")

    # the detail page and the patrol view show them as text as well
    page.goto(f"/ui/#/alerts/{alert.id}")
    expect(page.locator(".detail .meta-camera")).to_have_text(XSS)
    page.goto("/ui/#/patrol")
    expect(card.locator(".meta-camera")).to_have_text(XSS)
    assert page.locator("img[src=x]").count() == 0
    assert page.evaluate("typeof window.__xss") == "undefined"


def test_the_csv_import_reports_bad_rows_by_line_and_imports_all_or_nothing(
    served: Served,
    new_page: Callable[..., Page],
    login: Callable[[Page, str], None],
    shot: Callable[[Page, str], object],
) -> None:
    served.add_user("ada", "admin")
    page = new_page()
    login(page, "ada")
    page.goto("/ui/#/admin/import")
    bad = (
        "id,name,village,grid,url,record_url,detect_fps,enabled\n"
        "well-1,Village well,,grid-a,rtsp://10.1.0.5/stream2,,2,true\n"
        "mill-1,Mill,,no-such-grid,rtsp://10.1.0.6/stream2,,2,true\n"
        "pond-1,Pond,,grid-b,file:///etc/passwd,,2,true\n"
    )
    page.set_input_files(
        "#import-file", files=[{"name": "cameras.csv", "mimeType": "text/csv", "buffer": bad.encode()}]
    )
    expect(page.locator("#import-text")).to_have_value(bad)
    page.get_by_role("button", name="Check / import").click()
    result = page.locator("#import-result")
    expect(result.locator("[data-outcome=errors]")).to_contain_text("nothing was imported")
    lines = result.locator(".import-errors tbody tr")
    expect(lines).to_have_count(2)
    expect(lines.nth(0).locator("td").nth(0)).to_have_text("3")
    expect(lines.nth(0).locator("td").nth(1)).to_have_text("grid")
    expect(lines.nth(1).locator("td").nth(0)).to_have_text("4")
    expect(lines.nth(1).locator("td").nth(1)).to_have_text("url")
    shot(page, "admin-import-errors")

    good = bad.replace("no-such-grid", "grid-b").replace("file:///etc/passwd", "rtsp://10.1.0.7/stream2")
    page.fill("#import-text", good)
    page.get_by_role("button", name="Check / import").click()
    expect(result.locator("[data-outcome=ok]")).to_have_text(
        "Dry run, nothing written: 3 row(s): 3 new, 0 changed, 0 unchanged."
    )
    assert served.db.get_camera("well-1") is None
    page.uncheck("#import-dry-run")
    page.get_by_role("button", name="Check / import").click()
    expect(result.locator("[data-outcome=ok]")).to_have_text(
        "Imported: 3 row(s): 3 new, 0 changed, 0 unchanged."
    )
    for camera_id in ("well-1", "mill-1", "pond-1"):
        assert served.db.get_camera(camera_id) is not None
    page.click(".tabs >> text=Cameras")
    expect(page.locator(_row("cameras", "mill-1")).locator(".probe-text")).to_have_text("not probed")


def test_villages_grids_teams_and_users_are_managed_from_the_admin_pages(
    served: Served,
    new_page: Callable[..., Page],
    login: Callable[[Page, str], None],
    shot: Callable[[Page, str], object],
) -> None:
    served.add_user("ada", "admin")
    page = new_page()
    login(page, "ada")

    page.goto("/ui/#/admin/villages")
    expect(page.locator(_row("villages", "riverside")).get_by_role("button", name="Edit")).to_be_disabled()
    page.fill("#f-villages-id", "meadow")
    page.fill("#f-villages-name", "Meadow Vale")
    page.click("#create-villages button[type=submit]")
    expect(page.locator(_row("villages", "meadow")).locator("td").nth(1)).to_have_text("Meadow Vale")
    page.locator(_row("villages", "meadow")).get_by_role("button", name="Edit").click()
    page.locator('form[data-editing="meadow"] input[name=name]').fill("Meadow")
    page.locator('form[data-editing="meadow"]').get_by_role("button", name="Save").click()
    expect(page.locator(_row("villages", "meadow")).locator("td").nth(1)).to_have_text("Meadow")
    shot(page, "admin-villages")

    page.click(".tabs >> text=Teams")
    page.fill("#f-teams-id", "team-m")
    page.fill("#f-teams-name", "Meadow patrol")
    page.click("#create-teams button[type=submit]")
    expect(page.locator(_row("teams", "team-m"))).to_be_visible()

    page.click(".tabs >> text=Grids")
    page.fill("#f-grids-id", "grid-m")
    page.fill("#f-grids-name", "Meadow central")
    page.select_option("#f-grids-village", "meadow")
    page.select_option("#f-grids-team", "team-m")
    page.click("#create-grids button[type=submit]")
    grid_row = page.locator(_row("grids", "grid-m"))
    expect(grid_row.locator("td").nth(2)).to_have_text("Meadow")
    expect(grid_row.locator("td").nth(3)).to_have_text("Meadow patrol")
    shot(page, "admin-grids")

    # a village still in use by a grid cannot go: the API's 409 is shown
    page.click(".tabs >> text=Villages")
    delete = page.locator(_row("villages", "meadow")).locator("button.btn-danger")
    delete.click()
    delete.click()
    expect(page.locator(".toast-error").last).to_contain_text("grid")
    expect(page.locator(_row("villages", "meadow"))).to_be_visible()

    page.click(".tabs >> text=Users")
    page.fill("#f-users-id", "mia")
    page.fill("#f-users-name", "Mia Meadow")
    page.select_option("#f-users-role", "patrol")
    page.select_option("#f-users-team", "team-m")
    page.fill("#f-users-password", "first long passphrase here")
    page.click("#create-users button[type=submit]")
    user_row = page.locator(_row("users", "mia"))
    expect(user_row.locator("td[data-col=team]")).to_have_text("Meadow patrol")
    expect(user_row.locator("td[data-col=status]")).to_have_text("active")
    user_row.get_by_role("button", name="Disable").click()
    expect(user_row.locator("td[data-col=status]")).to_have_text("disabled")
    mia = served.db.get_user("mia")
    assert mia is not None and mia.disabled and mia.team_id == "team-m"
    user_row.get_by_role("button", name="Enable").click()
    expect(user_row.locator("td[data-col=status]")).to_have_text("active")
    user_row.get_by_role("button", name="Reset password").click()
    user_row.locator("input[name=new-password]").fill("second long passphrase here")
    user_row.get_by_role("button", name="Save password").click()
    expect(page.locator(".toast-ok").last).to_contain_text("password set")
    shot(page, "admin-users")

    # the team shows its member; the roster is edited as "user @ schedule" lines
    page.click(".tabs >> text=Teams")
    team_row = page.locator(_row("teams", "team-m"))
    expect(team_row.locator("td[data-col=members]")).to_have_text("Mia Meadow")
    team_row.get_by_role("button", name="Edit").click()
    page.locator('form[data-editing="team-m"] textarea[name=roster]').fill("mia @ nights")
    page.locator('form[data-editing="team-m"]').get_by_role("button", name="Save").click()
    expect(team_row.locator("td[data-col=roster]")).to_have_text("mia @ nights")
    team = served.db.get_team("team-m")
    assert team is not None and [(r.user, r.schedule) for r in team.roster] == [("mia", "nights")]
    shot(page, "admin-teams")

    # the new patrol member logs in with the new password and sees her grid
    phone = new_page(viewport=(390, 844))
    login(phone, "mia", "second long passphrase here")
    expect(phone.locator(".patrol-grids")).to_have_text("Grid: Meadow central")


def test_a_cameras_zones_masks_and_thresholds_are_summed_up_in_its_row(
    served: Served, new_page: Callable[..., Page], login: Callable[[Page, str], None]
) -> None:
    from storage.metadata import CameraRecord

    detection = {
        "zones": [{"name": "yard", "polygon": [[0, 0], [1, 0], [1, 1]]}],
        "masks": [[[0, 0], [0.2, 0], [0.2, 0.2]], [[0.5, 0.5], [0.6, 0.5], [0.6, 0.6]]],
        "motion_masks": [],
        "thresholds": {"person": {"min_score": 0.6, "min_area": 0.0}},
    }
    served.db.create_camera(
        CameraRecord(id="zoned-1", name="Zoned yard", village="riverside", grid="grid-a",
                     url_redacted="rtsp://10.0.0.9/s", detect_fps=2, source="api", detection=detection)
    )  # fmt: skip
    served.add_user("ada", "admin")
    page = new_page()
    login(page, "ada")
    page.goto(f"{served.url}/ui/#/admin/cameras")
    row = page.locator(_row("cameras", "zoned-1"))
    expect(row.locator(".detection")).to_have_text("1 zone · 2 masks · 1 threshold")
    expect(page.locator(_row("cameras", "cam-bridge")).locator(".detection")).to_have_count(0)
