"""configs/county-example.yaml: it is valid, it means what it says (rosters, escalation, one notifier of each
type), and `gridwatch check-config` accepts it without printing any of its secrets, also when it is broken."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from gridwatch.alerting import build_router, build_rules
from gridwatch.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "configs" / "county-example.yaml"


def _raw() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    return data


def _secrets(data: dict[str, Any]) -> dict[str, str]:
    """Every secret value the example holds, by where it is."""
    out: dict[str, str] = {"s3.secret_key": data["s3"]["secret_key"]}
    out["database password"] = urlsplit(data["database"]["url"]).password or ""
    for camera in data["cameras"]:
        for field in ("url", "record_url"):
            if field in camera:
                out[f"camera {camera['id']} {field} password"] = urlsplit(camera[field]).password or ""
    for n in data["notifiers"]:
        query = parse_qs(urlsplit(n.get("url", "")).query)
        for name in ("key", "access_token"):
            if name in query:
                out[f"notifier {n['name']} {name}"] = query[name][0]
        for name in ("secret", "password"):
            if name in n:
                out[f"notifier {n['name']} {name}"] = n[name]
    return out


def _check_config(path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")}
    return subprocess.run(
        [sys.executable, "-m", "gridwatch.cli", "check-config", str(path)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(EXAMPLE, environ={})


def test_the_example_is_a_county_deployment(settings: Settings) -> None:
    assert settings.redis.url is not None and settings.database.url is not None
    assert settings.database.url.get_secret_value().startswith("postgresql+psycopg://")
    assert settings.s3.endpoint is not None
    assert (len(settings.villages), len(settings.grids)) == (2, 3)
    teams = {t.id: t for t in settings.teams}
    for grid in settings.grids:
        assert grid.team in teams, grid
        schedules = {shift.schedule for shift in teams[grid.team].roster}
        assert {"day-shift", "night-shift"} <= schedules, grid.team
    assert (settings.routing.fallback_team, settings.routing.monitoring_centre) == (
        "county-joint",
        "monitoring-centre",
    )
    assert settings.routing.escalate_after_s == 300
    assert settings.timezone == "Asia/Shanghai" and len(settings.holidays) >= 3
    assert sorted(n.type for n in settings.notifiers) == ["dingtalk", "mqtt", "webhook", "webpush", "wecom"]
    by_type = {n.type: n for n in settings.notifiers}
    assert by_type["webhook"].secret is not None  # type: ignore[union-attr]
    assert by_type["dingtalk"].secret is not None  # type: ignore[union-attr]
    assert by_type["mqtt"].discovery_prefix == "homeassistant"  # type: ignore[union-attr]
    assert by_type["webpush"].vapid_private_key_file is not None  # type: ignore[union-attr]
    for camera in settings.cameras:
        parts = urlsplit(camera.url.get_secret_value())
        assert parts.scheme in ("rtsp", "rtsps") and parts.username and parts.password, camera.id
    assert {r.severity for r in settings.rules} == {"critical", "high", "normal", "low"}
    assert any(r.schedules for r in settings.rules) and any(r.zones for r in settings.rules)


def test_rosters_route_by_day_night_and_holiday(settings: Settings) -> None:
    router = build_router(settings)

    def on_duty(grid: str, local: str) -> tuple[str | None, tuple[str, ...]]:
        route = router.route(grid, datetime.fromisoformat(local).timestamp())
        return route.team, route.on_duty

    assert on_duty("dongshan-1", "2026-12-01T10:30:00+08:00") == ("dongshan-north", ("zhang-wei",))  # a Tue
    assert on_duty("dongshan-1", "2026-12-01T23:30:00+08:00") == ("dongshan-north", ("li-na",))
    assert on_duty("dongshan-1", "2026-12-02T06:30:00+08:00") == ("dongshan-north", ("li-na",))
    holiday = on_duty("dongshan-1", "2026-10-01T10:00:00+08:00")  # National Day, a Thursday
    assert holiday == ("dongshan-north", ("zhang-wei", "wang-qiang"))
    assert on_duty("xicun-1", "2026-12-01T21:00:00+08:00") == ("xicun-patrol", ("wu-hong",))
    assert router.escalation_teams("dongshan-south") == ("county-joint", "monitoring-centre")
    rules = {r.name: r for r in build_rules(settings)}
    assert "crowd-at-the-market" not in rules  # disabled
    night = rules["people-at-the-gate-at-night"]
    assert night.schedules[0].active(datetime.fromisoformat("2026-12-01T23:00:00+08:00").timestamp())
    assert not night.schedules[0].active(datetime.fromisoformat("2026-12-01T12:00:00+08:00").timestamp())


def test_check_config_accepts_it_and_prints_no_secret(settings: Settings) -> None:
    secrets = _secrets(_raw())
    assert len(secrets) >= 12 and all(len(v) >= 8 for v in secrets.values()), secrets
    done = _check_config(EXAMPLE)
    assert done.returncode == 0, done.stderr
    assert "ok: 5 camera(s), 2 village(s), 3 grid(s), 5 rule(s)" in done.stdout
    output = done.stdout + done.stderr
    assert [where for where, value in secrets.items() if value in output] == []
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    assert [where for where, value in secrets.items() if value in shown] == []


def test_a_broken_copy_is_refused_without_printing_its_secrets(tmp_path: Path) -> None:
    data = _raw()
    secrets = _secrets(data)
    camera = data["cameras"][0]
    camera["url"] = camera["url"].replace("rtsp://", "http://", 1)  # refused scheme, password inside
    wecom = next(n for n in data["notifiers"] if n["type"] == "wecom")
    wecom["url"] = wecom["url"].replace("https://", "ftp://", 1)  # refused scheme, key inside
    mqtt = next(n for n in data["notifiers"] if n["type"] == "mqtt")
    mqtt["pasword"] = mqtt.pop("password")  # a misspelt key holding the password
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    done = _check_config(broken)
    assert done.returncode == 2
    output = done.stdout + done.stderr
    assert "cameras[0].url" in output and "notifiers[1]" in output and "pasword" in output, output
    assert [where for where, value in secrets.items() if value in output] == []
