"""Property-based fuzzing of every operation in the API's OpenAPI document (schemathesis, in-process ASGI)
over a real database (SQLite, and PostgreSQL, which refuses NUL in text) with cameras, alerts and an
incident, and a real SeaweedFS store, as an admin (the login, setup and token routes included): whatever
the request, the API never answers with a server error, and a documented answer matches its schema.

Bounded (25 generated examples an operation, plus schemathesis' coverage cases, derandomized) so that it
runs the same cases each time: about 25 s a database. A failure prints the request that caused it (a curl
line to replay it)."""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.hooks import HookContext
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from gridwatch.alerting import sync_organisation
from gridwatch.api import AppState, create_app
from gridwatch.services import S3Server
from gridwatch.settings import Settings
from ingest.urls import redact_url
from storage.metadata import AlertRecord, CameraRecord, MetadataDB
from storage.objectstore import ObjectStore

T0 = datetime.now(UTC) - timedelta(hours=1)
OFFSETS = [
    UTC,
    timezone(timedelta(hours=14)),
    timezone(timedelta(hours=-14)),
    timezone(timedelta(hours=5, minutes=30)),
]
EDGES = [datetime.min.replace(tzinfo=tz) for tz in OFFSETS] + [
    datetime.max.replace(tzinfo=tz) for tz in OFFSETS
]
# `date-time` values over the whole range, its edges included (schemathesis' own stay near the present)
AWARE = st.one_of(st.sampled_from(EDGES), st.datetimes(timezones=st.sampled_from(OFFSETS)))
schemathesis.openapi.format("date-time", AWARE.map(datetime.isoformat))


def _cursor(when: str, alert_id: str) -> str:
    return base64.urlsafe_b64encode(f"{when}|{alert_id}".encode()).decode().rstrip("=")


# `cursor` is opaque to the document (a string); these are cursors of the real shape with odd contents
CURSORS = st.builds(
    _cursor,
    st.one_of(AWARE, st.datetimes()).map(datetime.isoformat) | st.text(max_size=40),
    st.text(max_size=80),
)


# every answer matches the document, the app's own 422s too (gridwatch/api_errors.py)
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def _settings() -> Settings:
    return Settings.model_validate(
        {
            "villages": [{"id": "v1", "name": "Village"}],
            "teams": [{"id": "east", "name": "East patrol", "members": ["li"]}],
            "users": [{"id": "li", "name": "Li", "role": "patrol", "team": "east"}],
            "grids": [{"id": "g1", "name": "Grid 1", "village": "v1", "team": "east"}],
            "schedules": [{"name": "nights", "windows": [{"start": "19:00", "end": "06:00"}]}],
            "cameras": [
                {
                    "id": "cam1",
                    "name": "Gate",
                    "village": "v1",
                    "grid": "g1",
                    "url": "rtsp://admin:cam-password@10.0.0.9/ch1",
                    "zones": [{"name": "yard", "polygon": [[0, 0], [1, 0], [1, 1]]}],
                }
            ],
            "rules": [{"name": "people", "labels": ["person"], "min_score": 0.5}],
        }
    )


def seed(db: MetadataDB, store: ObjectStore, settings: Settings) -> None:
    """The organisation, the camera, alerts (one with snapshot, thumbnail and clip) and an incident."""
    sync_organisation(settings, db)
    db.upsert_cameras(
        [
            CameraRecord(c.id, c.name, c.village, c.grid, redact_url(c.url.get_secret_value()), c.detect_fps)
            for c in settings.cameras
        ]
    )
    for i, label in enumerate(("person", "fire", "smoke")):
        at = T0 + timedelta(minutes=i)
        alert_id = f"{i + 1:032x}"
        db.add_alert(AlertRecord(alert_id, "cam1", "v1", "g1", label, 0.9, (1, 2, 3, 4), at, at))
    first = f"{1:032x}"
    for kind, key in (
        ("snapshot", store.snapshot_key("cam1", T0, first)),
        ("thumbnail", store.thumbnail_key("cam1", T0, first)),
        ("clip", store.clip_key("cam1", T0, first)),
    ):
        store.put_bytes(key, b"\xff\xd8data", "application/octet-stream")
        if kind == "snapshot":
            db.set_snapshot(first, key)
        elif kind == "thumbnail":
            db.set_thumbnail(first, key)
        else:
            db.set_clip(first, key=key, status="stored", duration_s=5.0)
    db.attach_alert_to_incident(
        alert_id=f"{2:032x}", camera_id="cam1", village="v1", grid="g1", group="fire", label="fire",
        severity="critical", at=T0, window_s=600, team="east",
    )  # fmt: skip


@pytest.fixture
def fuzz_state(db: MetadataDB, s3_server: S3Server, s3_keys: tuple[str, str]) -> AppState:
    store = ObjectStore(s3_server.endpoint, *s3_keys, bucket="fuzz-test")
    store.ensure_bucket()
    settings = _settings()
    seed(db, store, settings)
    health = {"detect": {"state": "online", "input_fps": 10.0}}
    return AppState(
        db,
        store,
        30,
        camera_health=lambda cid: health if cid == "cam1" else None,
        metrics=lambda: b"# HELP gridwatch_up 1\n",
        settings=settings,
        publish=lambda _message: None,
    )


@pytest.fixture
def admin_headers(fuzz_state: AppState, api_token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": api_token(fuzz_state.db, "ada", "admin")}


@pytest.fixture
def fuzz_app(fuzz_state: AppState) -> FastAPI:
    return create_app(fuzz_state)


def _load_schema() -> schemathesis.schemas.BaseSchema:
    """The app's OpenAPI document, read at collection (the operations become the test's cases) from an app
    over a throwaway database: the document does not depend on the data. The cases are sent to the app of
    the `fuzz_app` fixture. (schemathesis.pytest.from_fixture would spare this, but breaks on pytest 9.2:
    it sets `node._nodeid`, which pytest no longer has.)"""
    with tempfile.TemporaryDirectory() as where:
        db = MetadataDB(f"sqlite:///{Path(where) / 'schema.db'}")
        try:
            db.migrate()
            app = create_app(AppState(db, ObjectStore("127.0.0.1:9", "k", "unused", "unused"), 30))
            return schemathesis.openapi.from_asgi("/openapi.json", app)
        finally:
            db.close()


schema = _load_schema()


@schema.hook("flatmap_query")
def cursors_of_the_real_shape(ctx: HookContext, query: Any) -> st.SearchStrategy[Any]:
    if ctx.operation is None or ctx.operation.path != "/api/v1/alerts" or not isinstance(query, dict):
        return st.just(query)
    return st.just(query) | CURSORS.map(lambda cursor: {**query, "cursor": cursor})


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_no_server_errors_and_documented_answers(
    case: schemathesis.Case, fuzz_app: FastAPI, admin_headers: dict[str, str]
) -> None:
    case.call_and_validate(app=fuzz_app, headers=admin_headers, checks=CHECKS)
