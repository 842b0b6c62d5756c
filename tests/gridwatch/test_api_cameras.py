"""Camera registration through the API against a real RTSP server: create with a probe, edit, delete, probe
again, bulk CSV import (all rows or none), and what a patrol member may see. On SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from gridwatch.alerting import sync_organisation
from gridwatch.api import create_app
from gridwatch.api_state import AppState
from gridwatch.camera_registry import CameraRegistry, camera_urls
from gridwatch.sealing import SealError, SecretBox, new_key
from gridwatch.services import S3Server
from gridwatch.settings import Settings
from ingest.simulator.server import Mount, RtspSimulator
from storage.metadata import MetadataDB
from storage.objectstore import ObjectStore

PASSWORD = "Sekr3t-Cam-Pa55"


@pytest.fixture(scope="module")
def rtsp() -> Iterator[RtspSimulator]:
    simulator = RtspSimulator([Mount(name="gate", kind="pattern", width=320, height=240, fps=10, gop=10)])
    simulator.start()
    yield simulator
    simulator.stop()


def _settings(tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "data_dir": str(tmp_path),
            "villages": [{"id": "v1", "name": "East"}, {"id": "v2", "name": "West"}],
            "teams": [{"id": "team-a", "name": "A"}, {"id": "team-b", "name": "B"}],
            "grids": [
                {"id": "grid-a", "name": "A", "village": "v1", "team": "team-a"},
                {"id": "grid-b", "name": "B", "village": "v2", "team": "team-b"},
            ],
            "cameras": [
                {"id": "yaml-cam", "name": "Config", "village": "v1", "grid": "grid-a",
                 "url": "rtsp://u:p@10.0.0.1/s"},
            ],
        }
    )  # fmt: skip


@pytest.fixture
def world(
    db: MetadataDB,
    tmp_path: Path,
    s3_server: S3Server,
    s3_keys: tuple[str, str],
    role_headers: Callable[[MetadataDB], dict[str, dict[str, str]]],
) -> Iterator[tuple[TestClient, dict[str, dict[str, str]], AppState]]:
    settings = _settings(tmp_path)
    sync_organisation(settings, db)
    box = SecretBox(new_key())
    from datetime import UTC, datetime

    from gridwatch.camera_registry import sync_config_cameras

    sync_config_cameras(settings, db, box, datetime.now(UTC))
    store = ObjectStore(s3_server.endpoint, *s3_keys, bucket="cameras-test")
    state = AppState(db, store, 30, settings=settings, registry=CameraRegistry(db, box))
    users = role_headers(db)
    with TestClient(create_app(state)) as client:
        yield client, users, state


def test_an_admin_registers_a_camera_and_sees_its_probe(
    world: tuple[TestClient, dict[str, dict[str, str]], AppState], rtsp: RtspSimulator
) -> None:
    client, users, state = world
    url = rtsp.url("gate").replace("rtsp://", f"rtsp://admin:{PASSWORD}@")
    r = client.post(
        "/api/v1/cameras",
        headers=users["admin"],
        json={"id": "gate-1", "name": "North gate", "grid": "grid-a", "url": url, "detect_fps": 3},
    )
    assert r.status_code == 201, r.text
    camera = r.json()
    assert PASSWORD not in r.text and camera["url"].startswith("rtsp://admin:***@")
    assert (camera["village"], camera["source"], camera["detect_fps"]) == ("v1", "api", 3.0)
    probe = camera["probe"]
    assert probe["ok"] is True, probe
    assert (probe["width"], probe["height"]) == (320, 240)
    assert probe["fps_measured"] == pytest.approx(10, rel=0.2)
    # stored: sealed, not in clear, and the detail route shows the same probe
    assert client.get("/api/v1/cameras/gate-1", headers=users["operator"]).json()["probe"]["width"] == 320
    record = state.db.get_camera("gate-1")
    assert record is not None and record.url_sealed is not None and PASSWORD not in record.url_sealed
    assert camera_urls(record, state.registry.box) == (url, None)
    assert [a.action for a in state.db.list_audit()][-1] == "camera.create"


def test_a_camera_that_fails_its_probe_is_registered_with_the_error(
    world: tuple[TestClient, dict[str, dict[str, str]], AppState], rtsp: RtspSimulator
) -> None:
    client, users, _ = world
    dead = rtsp.url("gate").rsplit("/", 1)[0] + "/no-such-mount"
    r = client.post(
        "/api/v1/cameras",
        headers=users["admin"],
        json={"id": "dead", "name": "Dead", "grid": "grid-b", "url": dead},
    )
    assert r.status_code == 201, r.text
    probe = r.json()["probe"]
    assert probe["ok"] is False and probe["error"] and probe["error_kind"]
    assert r.json()["village"] == "v2"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"id": "x", "name": "X", "grid": "grid-a", "url": "http://10.0.0.1/"}, 422, "url"),
        ({"id": "x", "name": "X", "grid": "grid-a", "url": "rtsp://169.254.169.254/"}, 422, "url"),
        ({"id": "x", "name": "X", "grid": "nope", "url": "rtsp://10.0.0.1/"}, 422, "grid"),
        (
            {"id": "x", "name": "X", "village": "v2", "grid": "grid-a", "url": "rtsp://10.0.0.1/"},
            422,
            "village",
        ),
        ({"id": "X Y", "name": "X", "grid": "grid-a", "url": "rtsp://10.0.0.1/"}, 422, None),
        ({"id": "x", "name": "X", "grid": "grid-a", "url": "rtsp://10.0.0.1/", "detect_fps": 99}, 422, None),
        ({"id": "yaml-cam", "name": "X", "grid": "grid-a", "url": "rtsp://10.0.0.1/"}, 409, None),
    ],
)
def test_bad_registrations_are_refused_with_the_field(
    world: tuple[TestClient, dict[str, dict[str, str]], AppState],
    body: dict[str, object],
    status: int,
    field: str | None,
) -> None:
    client, users, state = world
    r = client.post("/api/v1/cameras?probe=false", headers=users["admin"], json=body)
    assert r.status_code == status, r.text
    if field is not None:
        assert [e["field"] for e in r.json()["detail"]] == [field]
    assert state.db.get_camera("x") is None


def test_edit_delete_and_the_config_cameras_stay_read_only(
    world: tuple[TestClient, dict[str, dict[str, str]], AppState], rtsp: RtspSimulator
) -> None:
    client, users, state = world
    admin = users["admin"]
    body = {"id": "c1", "name": "One", "grid": "grid-a", "url": "rtsp://u:old-pass@10.0.0.5/s"}
    assert client.post("/api/v1/cameras?probe=false", headers=admin, json=body).status_code == 201
    before = state.db.get_camera("c1")
    assert before is not None
    r = client.patch(
        "/api/v1/cameras/c1", headers=admin, json={"name": "One bis", "grid": "grid-b", "enabled": False}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["grid"], r.json()["village"], r.json()["enabled"]) == (
        "One bis",
        "grid-b",
        "v2",
        False,
    )
    after = state.db.get_camera("c1")
    assert after is not None and after.updated_at > before.updated_at  # workers restart it
    # a new URL is probed again and its password replaced
    r = client.patch("/api/v1/cameras/c1", headers=admin, json={"url": rtsp.url("gate")})
    assert r.status_code == 200 and r.json()["probe"]["ok"] is True
    assert client.post("/api/v1/cameras/c1/probe", headers=admin).json()["width"] == 320
    assert (
        client.patch("/api/v1/cameras/c1", headers=admin, json={"url": "file:///etc/passwd"}).status_code
        == 422
    )
    assert client.patch("/api/v1/cameras/c1", headers=admin, json={"bogus": 1}).status_code == 422
    # the config's camera
    assert client.patch("/api/v1/cameras/yaml-cam", headers=admin, json={"name": "Z"}).status_code == 409
    assert client.delete("/api/v1/cameras/yaml-cam", headers=admin).status_code == 409
    # operators and patrols cannot write
    assert client.delete("/api/v1/cameras/c1", headers=users["operator"]).status_code == 403
    assert client.post("/api/v1/cameras/c1/probe", headers=users["patrol_a"]).status_code == 403
    assert client.delete("/api/v1/cameras/c1", headers=admin).status_code == 204
    assert client.get("/api/v1/cameras/c1", headers=admin).status_code == 404
    assert client.delete("/api/v1/cameras/c1", headers=admin).status_code == 404


def test_a_patrol_member_sees_only_their_grids_cameras(
    world: tuple[TestClient, dict[str, dict[str, str]], AppState],
) -> None:
    client, users, _ = world
    body = {"id": "west", "name": "W", "grid": "grid-b", "url": "rtsp://10.0.0.7/s"}
    assert client.post("/api/v1/cameras?probe=false", headers=users["admin"], json=body).status_code == 201
    listed = {c["id"] for c in client.get("/api/v1/cameras", headers=users["patrol_a"]).json()}
    assert listed == {"yaml-cam"}
    assert client.get("/api/v1/cameras/west", headers=users["patrol_a"]).status_code == 404
    assert client.get("/api/v1/cameras/west", headers=users["operator"]).status_code == 200


def _csv(rows: list[dict[str, object]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(
        out, fieldnames=["id", "name", "village", "grid", "url", "record_url", "detect_fps", "enabled"]
    )
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _row(i: int, **extra: object) -> dict[str, object]:
    grid = "grid-a" if i % 2 else "grid-b"
    return {
        "id": f"cam-{i:05d}",
        "name": f"Camera {i}",
        "grid": grid,
        "url": f"rtsp://admin:pw{i}@10.1.{i // 250}.{i % 250 + 1}/h264",
    } | extra


def test_a_csv_with_bad_rows_imports_nothing_and_names_every_bad_row(
    world: tuple[TestClient, dict[str, dict[str, str]], AppState],
) -> None:
    client, users, state = world
    rows = [_row(i) for i in range(6)]
    rows[1]["url"] = "http://10.0.0.1/"
    rows[3]["grid"] = "nowhere"
    rows[4]["detect_fps"] = "fast"
    rows[5]["id"] = rows[0]["id"]
    r = client.post(
        "/api/v1/cameras/import", headers=users["admin"] | {"Content-Type": "text/csv"}, content=_csv(rows)
    )
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["total"] == 4 and "nothing was imported" in body["detail"]
    assert [(e["line"], e["field"]) for e in body["errors"]] == [
        (3, "url"),
        (5, "grid"),
        (6, "detect_fps"),
        (7, "id"),
    ]
    assert "pw1" not in r.text  # a refused URL is shown without its password
    assert {c.id for c in state.db.list_cameras()} == {"yaml-cam"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id,name,grid\nx,y,grid-a\n", "missing column"),
        ("id,name,grid,url,colour\n", "unknown column"),
        ("id,name,grid,url\nx,y,grid-a,rtsp://10.0.0.1/,extra\n", "more cells"),
        ("id,name,grid,url\nx,\x00y,grid-a,rtsp://10.0.0.1/\n", "NUL"),
        ("id,name,grid,url\nyaml-cam,y,grid-a,rtsp://10.0.0.1/\n", "defined in the config"),
    ],
)
def test_malformed_csv_files_are_refused(
    world: tuple[TestClient, dict[str, dict[str, str]], AppState], content: str, message: str
) -> None:
    client, users, _ = world
    r = client.post(
        "/api/v1/cameras/import", headers=users["admin"] | {"Content-Type": "text/csv"}, content=content
    )
    assert r.status_code == 422 and message in r.text, r.text


def test_ten_thousand_cameras_import_in_one_go_then_again_unchanged(
    world: tuple[TestClient, dict[str, dict[str, str]], AppState],
) -> None:
    """A county's worth of cameras in one file (about 1 MB, over the API's usual 1 MiB body limit): all
    created, passwords sealed; the same file again changes nothing; an edited row updates one camera.
    The time it takes is measured by bench/camera_import.py, not here."""
    client, users, state = world
    headers = users["admin"] | {"Content-Type": "text/csv"}
    rows = [
        _row(i, name=f"村口 {i} 号 East gate", record_url=f"rtsp://admin:pw{i}@10.2.0.1/main")
        for i in range(10_000)
    ]
    content = _csv(rows)
    assert len(content.encode()) > 1024 * 1024
    dry = client.post("/api/v1/cameras/import?dry_run=true", headers=headers, content=content)
    assert dry.json() == {"rows": 10_000, "created": 10_000, "updated": 0, "unchanged": 0, "dry_run": True}
    assert state.db.count_cameras() == 1
    r = client.post("/api/v1/cameras/import", headers=headers, content=content)
    assert r.status_code == 200, r.text
    assert r.json() == {"rows": 10_000, "created": 10_000, "updated": 0, "unchanged": 0, "dry_run": False}
    assert state.db.count_cameras() == 10_001
    camera = state.db.get_camera("cam-00042")
    assert camera is not None and camera.url_redacted == "rtsp://admin:***@10.1.0.43/h264"
    assert camera_urls(camera, state.registry.box)[0] == "rtsp://admin:pw42@10.1.0.43/h264"
    rows[7]["name"] = "Renamed"
    again = client.post("/api/v1/cameras/import", headers=headers, content=_csv(rows))
    assert again.json() == {"rows": 10_000, "created": 0, "updated": 1, "unchanged": 9_999, "dry_run": False}
    renamed = state.db.get_camera("cam-00007")
    assert renamed is not None and renamed.name == "Renamed"


def test_no_camera_password_lands_in_the_database_in_clear(
    world: tuple[TestClient, dict[str, dict[str, str]], AppState], db_url: str
) -> None:
    client, users, _ = world
    rows = [_row(i, record_url=f"rtsp://admin:rec-secret-{i}@10.9.0.{i + 1}/main") for i in range(3)]
    r = client.post(
        "/api/v1/cameras/import", headers=users["admin"] | {"Content-Type": "text/csv"}, content=_csv(rows)
    )
    assert r.status_code == 200, r.text
    engine = create_engine(db_url)
    with engine.connect() as conn:
        dump = " ".join(str(row) for row in conn.execute(text("SELECT * FROM cameras")))
    engine.dispose()
    assert "rec-secret" not in dump and "pw1" not in dump and ":p@" not in dump
    assert "rtsp://admin:***@10.9.0.1/main" in dump


def test_another_key_cannot_open_the_sealed_urls() -> None:
    box, other = SecretBox(new_key()), SecretBox(new_key())
    sealed = box.seal("rtsp://u:hunter2pw@10.0.0.1/")
    assert box.open(sealed) == "rtsp://u:hunter2pw@10.0.0.1/"
    with pytest.raises(SealError) as caught:
        other.open(sealed, "URL of camera 'gate'")
    assert "hunter2pw" not in str(caught.value) and "gate" in str(caught.value)
    with pytest.raises(ValueError, match="gridwatch secret-key"):
        SecretBox("not a key")


def test_the_key_comes_from_the_config_or_a_private_file_made_once(tmp_path: Path) -> None:
    import os
    import stat
    import subprocess
    import sys

    from gridwatch.sealing import load_box

    printed = subprocess.run(
        [sys.executable, "-m", "gridwatch.cli", "secret-key"], capture_output=True, text=True, check=True
    ).stdout.strip()
    configured = load_box(printed, tmp_path / "unused")
    assert configured.open(SecretBox(printed).seal("x")) == "x" and not (tmp_path / "unused").exists()
    made = load_box(None, tmp_path / "data")
    key_file = tmp_path / "data" / "secret.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    again = load_box(None, tmp_path / "data")  # the same key on the next start
    assert again.open(made.seal("rtsp://u:p@h/")) == "rtsp://u:p@h/"


def test_the_config_is_written_again_only_where_it_changed(db: MetadataDB, tmp_path: Path) -> None:
    """Every worker writes the config's cameras at start: an unchanged camera keeps its `updated_at` (else
    each start would make every worker restart it), a changed one is rewritten, a dropped one deleted."""
    from datetime import UTC, datetime, timedelta

    from gridwatch.camera_registry import sync_config_cameras

    settings = _settings(tmp_path)
    sync_organisation(settings, db)
    box = SecretBox(new_key())
    t0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    assert sync_config_cameras(settings, db, box, t0) == ["yaml-cam"]
    assert sync_config_cameras(settings, db, box, t0 + timedelta(minutes=1)) == []
    camera = db.get_camera("yaml-cam")
    assert camera is not None and camera.updated_at == t0
    renamed = settings.cameras[0].model_copy(update={"name": "Renamed"})
    changed = settings.model_copy(update={"cameras": [renamed]})
    assert sync_config_cameras(changed, db, box, t0 + timedelta(minutes=2)) == ["yaml-cam"]
    camera = db.get_camera("yaml-cam")
    assert camera is not None and camera.name == "Renamed" and camera.updated_at == t0 + timedelta(minutes=2)
    # another key (a second deployment's): the sealed URL does not open, so it is sealed again
    assert sync_config_cameras(changed, db, SecretBox(new_key()), t0 + timedelta(minutes=3)) == ["yaml-cam"]
    empty = changed.model_copy(update={"cameras": []})
    assert sync_config_cameras(empty, db, box, t0 + timedelta(minutes=4)) == []
    assert db.get_camera("yaml-cam") is None


DETECTION = {
    "zones": [{"name": "yard", "polygon": [[0.1, 0.1], [0.6, 0.1], [0.6, 0.9]]}],
    "masks": [[[0.0, 0.0], [0.2, 0.0], [0.2, 0.2]]],
    "motion_masks": [[[0.8, 0.0], [1.0, 0.0], [1.0, 0.3]]],
    "thresholds": {"person": {"min_score": 0.6, "min_area": 0.001}},
}


def test_an_api_camera_gets_zones_masks_and_thresholds_that_a_csv_import_keeps(
    world: tuple[TestClient, dict[str, dict[str, str]], AppState],
) -> None:
    client, users, state = world
    admin = users["admin"]
    body = {
        "id": "zoned",
        "name": "Zoned",
        "grid": "grid-a",
        "url": "rtsp://10.0.0.7/s",
        "detection": DETECTION,
    }
    r = client.post("/api/v1/cameras?probe=false", headers=admin, json=body)
    assert r.status_code == 201, r.text
    assert r.json()["detection"]["zones"][0]["name"] == "yard"
    stored = state.db.get_camera("zoned")
    assert stored is not None and stored.detection is not None
    assert stored.detection["thresholds"] == {"person": {"min_score": 0.6, "min_area": 0.001}}
    # a CSV import that updates the camera (another name) keeps them
    csv_text = "id,name,grid,url\nzoned,Zoned again,grid-a,rtsp://10.0.0.7/s\n"
    r = client.post("/api/v1/cameras/import", headers=admin | {"Content-Type": "text/csv"}, content=csv_text)
    assert r.status_code == 200 and r.json()["updated"] == 1, r.text
    again = state.db.get_camera("zoned")
    assert again is not None and again.name == "Zoned again" and again.detection == stored.detection
    # an edit replaces them whole, and restarts the camera on its worker (updated_at)
    only_mask = {"masks": [[[0.5, 0.5], [0.6, 0.5], [0.6, 0.6]]]}
    r = client.patch("/api/v1/cameras/zoned", headers=admin, json={"detection": only_mask})
    assert r.status_code == 200, r.text
    assert r.json()["detection"]["zones"] == [] and len(r.json()["detection"]["masks"]) == 1
    edited = state.db.get_camera("zoned")
    assert edited is not None and edited.updated_at > again.updated_at
    # bad geometry is refused with the field; null removes them
    for bad, where in (
        ({"zones": [{"name": "yard", "polygon": [[0.1, 0.1], [2.0, 0.1], [0.6, 0.9]]}]}, "outside the frame"),
        ({"masks": [[[0.1, 0.1], [0.2, 0.2]]]}, "at least 3 points"),
        ({"zones": [DETECTION["zones"][0], DETECTION["zones"][0]]}, "unique"),
        ({"thresholds": {"person": {"min_score": 3}}}, "less than or equal"),
        ({"bogus": []}, "Extra inputs"),
    ):
        r = client.patch("/api/v1/cameras/zoned", headers=admin, json={"detection": bad})
        assert r.status_code == 422 and where in r.text, (bad, r.text)
    r = client.patch("/api/v1/cameras/zoned", headers=admin, json={"detection": None})
    assert r.status_code == 200 and r.json()["detection"] is None
    removed = state.db.get_camera("zoned")
    assert removed is not None and removed.detection is None
    assert (
        client.patch("/api/v1/cameras/zoned", headers=users["operator"], json={"detection": None}).status_code
        == 403
    )


def test_the_config_cameras_detection_settings_are_written_and_followed(
    db: MetadataDB, tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    from gridwatch.camera_registry import camera_detection, sync_config_cameras

    settings = _settings(tmp_path)
    sync_organisation(settings, db)
    box = SecretBox(new_key())
    t0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    sync_config_cameras(settings, db, box, t0)
    plain = db.get_camera("yaml-cam")
    assert plain is not None and plain.detection is None and camera_detection(plain).is_empty()
    yard = [{"name": "yard", "polygon": [[0, 0], [1, 0], [1, 1]]}]
    data = settings.cameras[0].model_dump() | {"url": "rtsp://u:p@10.0.0.1/s", "zones": yard}
    zoned = type(settings.cameras[0]).model_validate(data)
    changed = settings.model_copy(update={"cameras": [zoned]})
    assert sync_config_cameras(changed, db, box, t0 + timedelta(minutes=1)) == ["yaml-cam"]  # zones changed
    assert sync_config_cameras(changed, db, box, t0 + timedelta(minutes=2)) == []  # and now unchanged
    camera = db.get_camera("yaml-cam")
    assert camera is not None and [z.name for z in camera_detection(camera).zones] == ["yard"]


def test_an_admin_gets_a_picture_of_the_scene_to_draw_zones_on(
    world: tuple[TestClient, dict[str, dict[str, str]], AppState], rtsp: RtspSimulator
) -> None:
    import cv2
    import numpy as np

    client, users, _ = world
    url = rtsp.url("gate").replace("rtsp://", f"rtsp://admin:{PASSWORD}@")
    body = {"id": "gate-f", "name": "Gate", "grid": "grid-a", "url": url}
    assert client.post("/api/v1/cameras?probe=false", headers=users["admin"], json=body).status_code == 201
    r = client.get("/api/v1/cameras/gate-f/frame", headers=users["admin"])
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg" and r.headers["cache-control"] == "no-store"
    assert (r.headers["x-frame-width"], r.headers["x-frame-height"]) == ("320", "240")
    picture = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None and picture.shape == (240, 320, 3)
    assert float(picture.std()) > 10, "a test pattern, not a grey frame decoded before the first keyframe"
    assert client.get("/api/v1/cameras/gate-f/frame", headers=users["operator"]).status_code == 200
    assert client.get("/api/v1/cameras/gate-f/frame", headers=users["patrol_a"]).status_code == 403
    assert client.get("/api/v1/cameras/gate-f/frame").status_code == 401
    assert client.get("/api/v1/cameras/no-such/frame", headers=users["admin"]).status_code == 404

    # a camera that gives no picture: 502 with the reason, and never the password
    dead = rtsp.url("gate").replace("rtsp://", f"rtsp://admin:{PASSWORD}@").rsplit("/", 1)[0] + "/gone"
    body = {"id": "dead-f", "name": "Dead", "grid": "grid-a", "url": dead}
    assert client.post("/api/v1/cameras?probe=false", headers=users["admin"], json=body).status_code == 201
    r = client.get("/api/v1/cameras/dead-f/frame", headers=users["admin"])
    assert r.status_code == 502, r.text
    assert r.json()["error_kind"] in {"error", "unreachable", "timeout"} and r.json()["detail"]
    assert PASSWORD not in r.text


def test_picture_grabs_are_limited_and_a_busy_registry_says_so(
    world: tuple[TestClient, dict[str, dict[str, str]], AppState],
) -> None:
    """A fifth grab while four hold their RTSP sessions gets 429 (a fake grabber holds them here)."""
    import threading

    from gridwatch.camera_registry import MAX_CONCURRENT_GRABS
    from ingest.frame_grab import FrameGrab

    client, users, state = world
    release = threading.Event()
    started = threading.Semaphore(0)

    def slow(_url: str) -> FrameGrab:
        started.release()
        release.wait(10)
        return FrameGrab(ok=True, jpeg=b"\xff\xd8", width=1, height=1)

    state.registry.grabber = slow
    answers: list[int] = []
    holders = [
        threading.Thread(
            target=lambda: answers.append(
                client.get("/api/v1/cameras/yaml-cam/frame", headers=users["admin"]).status_code
            )
        )
        for _ in range(MAX_CONCURRENT_GRABS)
    ]
    for holder in holders:
        holder.start()
    for _ in holders:
        assert started.acquire(timeout=10)
    busy = client.get("/api/v1/cameras/yaml-cam/frame", headers=users["admin"])
    release.set()
    for holder in holders:
        holder.join(10)
    assert (busy.status_code, busy.headers.get("retry-after")) == (429, "2"), busy.text
    assert answers == [200] * MAX_CONCURRENT_GRABS
    assert client.get("/api/v1/cameras/yaml-cam/frame", headers=users["admin"]).status_code == 200


def test_every_kind_of_422_body_matches_the_documented_schema(
    world: tuple[TestClient, dict[str, dict[str, str]], AppState],
) -> None:
    """FastAPI's own validation errors, the registry's field list, a plain message and a CSV import's report
    all validate against the document's 422 schema; FastAPI's original schema refused the app's own."""
    import jsonschema

    client, users, _ = world
    admin = users["admin"]
    document = client.get("/openapi.json").json()
    route = document["paths"]["/api/v1/cameras"]["post"]["responses"]["422"]
    assert route["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/HTTPValidationError"
    }
    validator = jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/HTTPValidationError", "components": document["components"]}
    )
    bodies = {
        "fastapi": client.post("/api/v1/cameras", headers=admin, json={"id": "x"}),
        "fields": client.post(
            "/api/v1/cameras",
            headers=admin,
            json={"id": "x", "name": "X", "grid": "nope", "url": "rtsp://10.0.0.1/"},
        ),
        "message": client.patch("/api/v1/cameras/yaml-cam", headers=admin, json={"name": None}),
        "import": client.post(
            "/api/v1/cameras/import",
            headers={**admin, "Content-Type": "text/csv"},
            content=b"id,name,grid,url\nbad id,X,nope,http://x/\n",
        ),
    }
    for kind, response in bodies.items():
        assert response.status_code == 422, (kind, response.text)
        errors = [e.message for e in validator.iter_errors(response.json())]
        assert errors == [], (kind, response.json(), errors)
    assert isinstance(bodies["fields"].json()["detail"][0]["field"], str)
    assert isinstance(bodies["message"].json()["detail"], str)
    assert bodies["import"].json()["total"] >= 1

    from fastapi.openapi.utils import get_openapi

    app = client.app  # type: ignore[attr-defined]
    original = get_openapi(title="x", version="1", routes=app.routes)["components"]
    fastapi_only = jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/HTTPValidationError", "components": original}
    )
    assert not fastapi_only.is_valid(bodies["fields"].json())  # the gap this schema closes
    assert fastapi_only.is_valid(bodies["fastapi"].json())
