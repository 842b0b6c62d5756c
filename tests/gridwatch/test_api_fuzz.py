"""Property-based fuzzing of every operation in the API's OpenAPI document (schemathesis, in-process ASGI)
over a real SQLite database with cameras, alerts and an incident, and a real SeaweedFS store: whatever the
request, the API never answers with a server error, and a documented answer matches its documented schema.

Bounded (25 examples an operation, derandomized) so that it runs the same cases each time, in about a
minute. A failure prints the request that caused it (a curl line to replay it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from gridwatch.alerting import sync_organisation
from gridwatch.api import AppState, create_app
from gridwatch.services import S3Server
from gridwatch.settings import Settings
from ingest.urls import redact_url
from storage.metadata import AlertRecord, CameraRecord, MetadataDB
from storage.objectstore import ObjectStore

T0 = datetime.now(UTC) - timedelta(hours=1)
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
def fuzz_state(tmp_path: Path, s3_server: S3Server, s3_keys: tuple[str, str]) -> Iterator[AppState]:
    db = MetadataDB(f"sqlite:///{tmp_path / 'fuzz.db'}")
    db.migrate()
    store = ObjectStore(s3_server.endpoint, *s3_keys, bucket="fuzz-test")
    store.ensure_bucket()
    settings = _settings()
    seed(db, store, settings)
    health = {"detect": {"state": "online", "input_fps": 10.0}}
    yield AppState(
        db,
        store,
        30,
        camera_health=lambda cid: health if cid == "cam1" else None,
        metrics=lambda: b"# HELP gridwatch_up 1\n",
        settings=settings,
        publish=lambda _message: None,
    )
    db.close()


@pytest.fixture
def admin_headers(fuzz_state: AppState, api_token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": api_token(fuzz_state.db, "ada", "admin")}


@pytest.fixture
def api_schema(fuzz_state: AppState) -> schemathesis.schemas.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(fuzz_state))


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_server_errors_and_documented_answers(case: schemathesis.Case, admin_headers: dict[str, str]) -> None:
    case.call_and_validate(headers=admin_headers, checks=CHECKS)
