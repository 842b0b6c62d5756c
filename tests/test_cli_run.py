"""`gridwatch run` as a user starts it: one process with embedded valkey, SeaweedFS, SQLite and cameras."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.e2e


def test_gridwatch_run_all_in_one(tmp_path: Path, models_dir: Path, media_dir: Path, media: dict) -> None:
    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    config["data_dir"] = str(tmp_path / "data")
    config["api"]["port"] = 0
    config["models"]["dir"] = str(models_dir)
    config["simulator"]["media_dir"] = str(media_dir)
    config["cameras"] = [c for c in config["cameras"] if c["url"] == "sim://people"]
    config["simulator"]["cameras"] = [m for m in config["simulator"]["cameras"] if m["name"] == "people"]
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")}
    env["PYTHONUNBUFFERED"] = "1"
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gridwatch.cli", "run", str(path)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        api = _wait_for(
            lambda: re.search(r"API: (http://127\.0\.0\.1:\d+)", log_path.read_text()), 90, log_path
        )
        base = api.group(1)
        # first run: no admin yet; the log holds this start's one-time setup token
        token = _wait_for(lambda: re.search(r'"setup_token": "([^"]+)"', log_path.read_text()), 10, log_path)
        assert httpx.get(f"{base}/api/v1/alerts", timeout=5).status_code == 401
        created = httpx.post(
            f"{base}/api/v1/setup",
            json={
                "setup_token": token.group(1),
                "user_id": "admin",
                "name": "Admin",
                "password": "a long passphrase",
            },
            timeout=10,
        )
        assert created.status_code == 201, created.text
        session = httpx.Client(base_url=base, timeout=10)
        assert session.post(
            "/api/v1/login", json={"username": "admin", "password": "a long passphrase"}
        ).is_success
        alert = _wait_for(lambda: _first_alert(session, "person"), 60, log_path)
        assert alert["camera_id"] == "dongshan-gate" and alert["grid"] == "dongshan-1"
        children = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        names = " ".join(psutil.Process(pid).name() for pid in children if psutil.pid_exists(pid))
        assert "valkey" in names and "weed" in names, names
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, log_path.read_text()[-3000:]
        leftover = [
            pid for pid in children if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
        ]
        assert leftover == [], f"processes left running: {leftover}"
        text = log_path.read_text()
        assert "Traceback" not in text, text[-3000:]
        assert (tmp_path / "data" / "gridwatch.db").exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _first_alert(session: httpx.Client, label: str) -> dict | None:
    try:
        items = session.get("/api/v1/alerts").json()["items"]
    except httpx.HTTPError:
        return None
    return next((a for a in items if a["label"] == label), None)


def _wait_for(check, timeout: float, log_path: Path):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s; log:\n{log_path.read_text()[-4000:]}")
