"""MetadataDB on SQLite (a file in tmp_path) and on a real PostgreSQL cluster started for this session."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

from storage.metadata import AlertRecord, CameraRecord, MetadataDB, new_alert_id

# -- a private PostgreSQL cluster ----------------------------------------------------------------


def _pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    assert initdb, "PostgreSQL server binaries (initdb, postgres) are not installed"
    return Path(initdb).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_user() -> dict[str, Any]:
    """Popen arguments that run PostgreSQL as the `postgres` user when we are root (it refuses root)."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam("postgres")
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    bindir = _pg_bindir()
    as_user = _as_user()
    root = Path(tempfile.mkdtemp(prefix="gw-pg-"))  # /tmp: tmp_path lies under root's private dir
    if as_user:
        os.chown(root, as_user["user"], as_user["group"])
    data, log_path = root / "data", root / "postgres.log"
    env = {**os.environ, "LC_ALL": "C", "HOME": str(root)}
    subprocess.run(
        [bindir / "initdb", "-D", data, "-U", "gridwatch", "--auth=trust", "-E", "UTF8", "--no-locale",
         "--no-sync"],
        check=True, capture_output=True, env=env, cwd=root, **as_user,
    )  # fmt: skip
    port = _free_port()
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [bindir / "postgres", "-D", data, "-p", str(port), "-k", root,
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=50"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True, **as_user,
        )  # fmt: skip
    url = f"postgresql+psycopg://gridwatch@127.0.0.1:{port}/postgres"
    try:
        while True:
            try:
                psycopg.connect(host="127.0.0.1", port=port, user="gridwatch", dbname="postgres").close()
                break
            except psycopg.OperationalError:
                if server.poll() is not None or time.perf_counter() - started > 30:
                    raise RuntimeError(f"PostgreSQL did not start:\n{log_path.read_text()[-3000:]}") from None
                time.sleep(0.05)
        print(f"PostgreSQL ready in {time.perf_counter() - started:.2f} s on port {port}")
        yield url
    finally:
        server.send_signal(signal.SIGINT)  # fast shutdown
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        shutil.rmtree(root, ignore_errors=True)


def _fresh_pg_database(server_url: str) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    port = int(server_url.rsplit(":", 1)[1].split("/")[0])
    with psycopg.connect(
        host="127.0.0.1", port=port, user="gridwatch", dbname="postgres", autocommit=True
    ) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataDB]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'meta' / 'gridwatch.db'}"
    else:
        url = _fresh_pg_database(request.getfixturevalue("postgres_url"))
    database = MetadataDB(url)
    database.create_schema()
    yield database
    database.close()


# -- helpers ------------------------------------------------------------------------------------

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


def _alert(created_at: datetime, **overrides: Any) -> AlertRecord:
    values: dict[str, Any] = {
        "id": new_alert_id(),
        "camera_id": "cam-01",
        "village": "v01",
        "grid": "g0101",
        "label": "person",
        "score": 0.87,
        "bbox": (10.0, 20.5, 110.0, 220.25),
        "created_at": created_at,
        "frame_time": created_at - timedelta(milliseconds=400),
    }
    values.update(overrides)
    return AlertRecord(**values)


# -- tests --------------------------------------------------------------------------------------


def test_schema_creation_is_idempotent(db: MetadataDB) -> None:
    db.create_schema()
    assert db.list_alerts() == []
    assert db.list_cameras() == []


def test_cameras_upsert_and_list(db: MetadataDB) -> None:
    cams = [
        CameraRecord("cam-02", "East gate", "v01", "g0101", "rtsp://***@10.0.0.2/s1", 2.0, True, T0),
        CameraRecord("cam-01", "Main road", "v01", "g0102", "rtsp://***@10.0.0.1/s1", 5.0, True, T0),
    ]
    db.upsert_cameras(cams)
    assert [c.id for c in db.list_cameras()] == ["cam-01", "cam-02"]
    changed = CameraRecord("cam-02", "East gate (new)", "v02", "g0201", "rtsp://10.0.0.9/", 1.0, False)
    db.upsert_cameras([changed, CameraRecord("cam-03", "Square", "v01", "g0101", "rtsp://x/", 2.0)])
    listed = {c.id: c for c in db.list_cameras()}
    assert sorted(listed) == ["cam-01", "cam-02", "cam-03"]
    assert listed["cam-02"] == changed
    assert listed["cam-01"] == cams[1]
    assert listed["cam-01"].updated_at.tzinfo is UTC
    with pytest.raises(ValueError):
        db.upsert_cameras([CameraRecord("cam-09", "n", "v", "g", "u", 1.0, True, datetime(2024, 1, 1))])


def test_alert_round_trip_keeps_aware_utc_times(db: MetadataDB) -> None:
    beijing = timezone(timedelta(hours=8))
    alert = _alert(datetime(2024, 5, 1, 16, 0, 0, 123456, tzinfo=beijing), snapshot_key="snapshots/x.jpg")
    db.add_alert(alert)
    got = db.get_alert(alert.id)
    assert got is not None
    assert got.created_at == alert.created_at and got.created_at.tzinfo is UTC
    assert got.created_at == datetime(2024, 5, 1, 8, 0, 0, 123456, tzinfo=UTC)
    assert got.frame_time == alert.frame_time
    assert got.bbox == (10.0, 20.5, 110.0, 220.25)
    assert got.clip_status == "pending" and got.clip_key is None
    assert got == alert  # aware datetimes compare by instant
    assert db.get_alert("missing") is None
    with pytest.raises(ValueError):
        db.add_alert(_alert(datetime(2024, 5, 1, 8, 0)))  # naive


def test_list_alerts_newest_first_with_keyset_pages(db: MetadataDB) -> None:
    alerts = []
    for i in range(23):
        # groups of three share a timestamp, so the id breaks ties
        alerts.append(_alert(T0 + timedelta(seconds=i // 3, microseconds=7), camera_id=f"cam-{i % 4}"))
    for a in alerts[::2] + alerts[1::2]:  # insertion order differs from time order
        db.add_alert(a)
    expected = [a.id for a in sorted(alerts, key=lambda a: (a.created_at, a.id), reverse=True)]

    pages: list[list[str]] = []
    before: tuple[datetime, str] | None = None
    while True:
        page = db.list_alerts(limit=5, before=before)
        if not page:
            break
        pages.append([a.id for a in page])
        before = (page[-1].created_at, page[-1].id)
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [i for p in pages for i in p] == expected
    assert [a.id for a in db.list_alerts()] == expected
    assert [a.id for a in db.list_alerts(limit=2)] == expected[:2]
    with pytest.raises(ValueError):
        db.list_alerts(limit=0)


def test_set_clip_and_snapshot(db: MetadataDB) -> None:
    ok, bad = _alert(T0), _alert(T0 + timedelta(seconds=1))
    db.add_alert(ok)
    db.add_alert(bad)
    db.set_clip(ok.id, key="clips/cam-01/2024/05/01/x.mp4", status="stored", duration_s=12.0)
    db.set_clip(bad.id, key=None, status="failed", error="remux failed: " + "x" * 5000)
    db.set_snapshot(ok.id, "snapshots/cam-01/2024/05/01/x.jpg")
    got_ok, got_bad = db.get_alert(ok.id), db.get_alert(bad.id)
    assert got_ok is not None and got_bad is not None
    assert (got_ok.clip_status, got_ok.clip_key, got_ok.clip_duration_s, got_ok.clip_error) == (
        "stored",
        "clips/cam-01/2024/05/01/x.mp4",
        12.0,
        None,
    )
    assert got_ok.snapshot_key == "snapshots/cam-01/2024/05/01/x.jpg"
    assert got_bad.clip_status == "failed" and got_bad.clip_key is None
    assert got_bad.clip_error is not None and got_bad.clip_error.startswith("remux failed")
    assert len(got_bad.clip_error) <= 2000
    with pytest.raises(ValueError):
        db.set_clip(ok.id, key=None, status="lost")
    with pytest.raises(KeyError):
        db.set_clip("no-such-alert", key=None, status="failed")
    with pytest.raises(KeyError):
        db.set_snapshot("no-such-alert", "k")


def test_concurrent_inserts_and_updates_from_threads(db: MetadataDB) -> None:
    threads_n, per_thread = 8, 25
    errors: list[BaseException] = []
    ids: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(threads_n)

    def work(n: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                alert = _alert(T0 + timedelta(milliseconds=n * 1000 + i), camera_id=f"cam-{n}")
                db.add_alert(alert)
                db.set_clip(alert.id, key=f"clips/{alert.id}.mp4", status="stored", duration_s=float(i))
                db.upsert_cameras([CameraRecord(f"cam-{n}", "c", "v", "g", "rtsp://x/", 1.0)])
                with lock:
                    ids.append(alert.id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    listed = db.list_alerts(limit=1000)
    assert sorted(a.id for a in listed) == sorted(ids)
    assert len(listed) == threads_n * per_thread
    assert all(a.clip_status == "stored" for a in listed)
    assert len(db.list_cameras()) == threads_n


def test_sqlite_file_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "g.db"
    db = MetadataDB(f"sqlite:///{path}")
    db.create_schema()
    db.add_alert(_alert(T0))
    assert path.exists() and Path(f"{path}-wal").exists()
    db.close()
