"""Structured logs: JSON lines with their fields, exceptions and `extra=` values; credentials masked in every
format; and a real `gridwatch api` process with GRIDWATCH_LOG_FORMAT=json writing only JSON lines to stderr,
its own, uvicorn's and the access log's, while it answers `/readyz`."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gridwatch.logs import LogFormat, make_handler, mask_secrets
from gridwatch.services import RedisServer, S3Server, free_port
from gridwatch.settings import ConfigError, load_settings
from storage.objectstore import ObjectStore

REPO = Path(__file__).resolve().parents[2]
CAMERA_URL = "rtsp://admin:Cam-Pass-42@10.0.0.9:554/ch1"
TOKEN = "gwt_0123abcd_" + "S" * 43  # the shape of an API token: public prefix, 43-character secret


@pytest.fixture
def capture() -> Iterator[Callable[[LogFormat], tuple[logging.Logger, io.StringIO]]]:
    """`capture(format)`: a logger of its own writing through the app's handler into a string."""
    made: list[logging.Logger] = []

    def make(log_format: LogFormat) -> tuple[logging.Logger, io.StringIO]:
        out = io.StringIO()
        handler = make_handler(log_format)
        handler.setStream(out)  # type: ignore[attr-defined]
        logger = logging.getLogger(f"gridwatch.test.logs.{len(made)}")
        logger.handlers, logger.propagate = [handler], False
        logger.setLevel(logging.DEBUG)
        made.append(logger)
        return logger, out

    yield make
    for logger in made:
        logger.handlers, logger.propagate = [], True


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_carry_time_level_logger_message_and_extras(
    capture: Callable[[LogFormat], tuple[logging.Logger, io.StringIO]],
) -> None:
    log, out = capture("json")
    before = datetime.now(UTC)
    log.info(
        "alert %s raised", "a1", extra={"camera": "cam1", "alert": "a1", "score": 0.91, "path": Path("/x")}
    )
    log.warning("second line\nwith a newline")
    first, second = _lines(out)
    assert first.pop("ts").endswith("Z")
    assert first == {
        "level": "INFO",
        "logger": log.name,
        "message": "alert a1 raised",
        "camera": "cam1",
        "alert": "a1",
        "score": 0.91,
        "path": "/x",  # not JSON by itself: as text
    }
    at = datetime.fromisoformat(second["ts"])
    assert at.utcoffset() is not None and at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert before.replace(microsecond=0) <= at <= datetime.now(UTC)
    assert second["level"] == "WARNING" and second["message"] == "second line\nwith a newline"


def test_json_lines_carry_the_exception_as_text(
    capture: Callable[[LogFormat], tuple[logging.Logger, io.StringIO]],
) -> None:
    log, out = capture("json")
    try:
        raise ValueError("decoder broke")
    except ValueError:
        log.exception("camera %s failed", "cam1", extra={"camera": "cam1"})
    [line] = _lines(out)
    assert line["level"] == "ERROR" and line["message"] == "camera cam1 failed" and line["camera"] == "cam1"
    assert line["exc_info"].startswith("Traceback (most recent call last):")
    assert line["exc_info"].rstrip().endswith("ValueError: decoder broke")


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_credentials_are_masked_in_messages_extras_and_tracebacks(
    capture: Callable[[LogFormat], tuple[logging.Logger, io.StringIO]], log_format: LogFormat
) -> None:
    log, out = capture(log_format)
    log.warning("cannot open %s", CAMERA_URL)
    log.info(f"redis at redis://:Redis-Pass-7@10.0.0.2:6379/0 and token {TOKEN}", extra={"url": CAMERA_URL})
    log.info("webhook https://hooks.example/x?key=Hook-Key-3&thread=1")
    try:
        raise ConnectionError(f"connect to {CAMERA_URL} failed")
    except ConnectionError:
        log.exception("reconnect")
    text = out.getvalue()
    for secret in ("Cam-Pass-42", "Redis-Pass-7", "S" * 43, "Hook-Key-3"):
        assert secret not in text, secret
    assert "rtsp://admin:***@10.0.0.9:554/ch1" in text and "redis://:***@10.0.0.2:6379/0" in text
    assert "gwt_0123abcd_***" in text and "key=***&thread=1" in text
    if log_format == "json":
        lines = _lines(out)
        assert lines[1]["url"] == "rtsp://admin:***@10.0.0.9:554/ch1"
        assert "ConnectionError: connect to rtsp://admin:***@10.0.0.9:554/ch1 failed" in lines[3]["exc_info"]


def test_masking_keeps_what_is_not_a_secret_and_is_idempotent() -> None:
    for text in (
        "http://127.0.0.1:8080/api/v1/alerts?limit=5",
        "user li logged in from 10.0.0.5",
        "listing gwt_0123abcd_... (the public prefix)",
        "at 12:30 li@example.org",
        "?next=http%3A%2F%2Fh%3A80%2Fx%40y",
    ):
        assert mask_secrets(text) == text
    once = mask_secrets(f"rtsp://a:p@ss@h/ {TOKEN} ?password=x ?next=rtsp%3A%2F%2Fa%3Ap%40ss%40h%2F")
    assert once == "rtsp://a:***@h/ gwt_0123abcd_*** ?password=*** ?next=rtsp%3A%2F%2Fa%3A***%40h%2F"
    assert mask_secrets(once) == once


def test_the_log_format_setting_and_its_environment_variable() -> None:
    assert load_settings(None, environ={}).log_format == "auto"
    assert load_settings(None, environ={"GRIDWATCH_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(ConfigError, match="log_format"):
        load_settings(None, environ={"GRIDWATCH_LOG_FORMAT": "xml"})


def test_a_gridwatch_api_process_writes_json_lines_and_masks_secrets(
    tmp_path: Path, s3_server: S3Server, s3_keys: tuple[str, str], redis_server: RedisServer
) -> None:
    access, secret = s3_keys
    ObjectStore(s3_server.endpoint, access, secret, "logs-test").ensure_bucket()
    port = free_port()
    config = tmp_path / "api.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "redis": {"url": redis_server.url},
                "s3": {"endpoint": s3_server.endpoint, "access_key": access, "bucket": "logs-test"},
                "database": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
                "api": {"port": port},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")}
    env |= {"GRIDWATCH_LOG_FORMAT": "json", "GRIDWATCH_S3__SECRET_KEY": secret}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gridwatch.cli", "api", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        ready = None
        for _ in range(300):  # up to 30 s for the process to start
            if proc.poll() is not None:
                break
            try:
                ready = httpx.get(f"{base}/readyz", timeout=3)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert ready is not None, "the API did not come up"
        assert ready.status_code == 200, ready.text
        assert set(ready.json()["checks"]) == {"database", "redis", "object_store"}
        # the access log line carries the query: a token and a camera URL in it are masked
        httpx.get(f"{base}/healthz", params={"t": TOKEN, "next": CAMERA_URL}, timeout=3)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]  # every line is JSON
    assert lines and all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    loggers = {line["logger"] for line in lines}
    assert {"gridwatch.auth", "uvicorn.error", "uvicorn.access"} <= loggers, loggers
    assert any("/readyz" in line["message"] for line in lines if line["logger"] == "uvicorn.access")
    for hidden in (secret, "S" * 43, "Cam-Pass-42"):
        assert hidden not in stderr, hidden
    assert "gwt_0123abcd_***" in stderr and "admin%3A***%40" in stderr  # %-encoded in the access log
    assert not any("color_message" in line for line in lines)
    # what the process logged once it served (by order in its own stream, not by the clock: a connect made
    # while the schema was being migrated may sit in a busy machine's queue until the server is up)
    serving = next(i for i, line in enumerate(lines) if "Uvicorn running on" in line["message"])
    probes = [line for line in lines[serving:] if line["logger"] != "uvicorn.access"]
    assert not [line for line in probes if line["logger"].startswith("alembic")]  # a probe logs nothing
    assert any(line["logger"].startswith("alembic") for line in lines[:serving])  # the schema came first
