"""`/healthz` and `/readyz` against real servers: the metadata database (SQLite and PostgreSQL), Redis and
SeaweedFS S3, each stopped (or frozen) in turn: `/readyz` names the one that does not answer, says no more
than its error's class, and answers within 2 s even when a server hangs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from fastapi.testclient import TestClient

from alerts.bus import AlertBus
from gridwatch.api import AppState, create_app
from gridwatch.api_health import CheckResult, ReadyChecks
from gridwatch.feed import FeedHub
from gridwatch.services import RedisServer, S3Server
from storage.metadata import MetadataDB
from storage.objectstore import ObjectStore

T = TypeVar("T")

OK = {"status": "ok"}


@pytest.fixture
def store(s3_server: S3Server, s3_keys: tuple[str, str]) -> ObjectStore:
    store = ObjectStore(s3_server.endpoint, *s3_keys, bucket="health-test", timeout=1.0)
    store.ensure_bucket()
    return store


@contextmanager
def _served(db: MetadataDB, store: ObjectStore, redis_url: str) -> Iterator[TestClient]:
    """The app of a process with a live feed (so Redis is checked); the feed is not started: only its Redis
    client is used."""
    bus = AlertBus.from_url(redis_url, "test:health")
    try:
        with TestClient(create_app(AppState(db, store, 30, feed=FeedHub(bus.client, bus.stream)))) as client:
            yield client
    finally:
        bus.close()


@pytest.fixture
def client(tmp_path: Path, store: ObjectStore, redis_server: RedisServer) -> Iterator[TestClient]:
    """On SQLite only: the servers stopped here are Redis and S3 (both databases: the first test)."""
    db = MetadataDB(f"sqlite:///{tmp_path / 'health.db'}")
    db.migrate()
    with _served(db, store, redis_server.url) as client:
        yield client
    db.close()


def _readyz(client: TestClient) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    r = client.get("/readyz")
    return r.status_code, r.json(), time.monotonic() - started


def test_healthz_and_readyz_need_no_login_and_are_ready_when_everything_answers(
    db: MetadataDB, store: ObjectStore, redis_server: RedisServer
) -> None:
    with _served(db, store, redis_server.url) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        status, body, took = _readyz(client)
    checks = {"database": OK, "redis": OK, "object_store": OK}
    assert (status, body) == (200, {"status": "ready", "checks": checks})
    assert took < 2.0


def test_readyz_names_redis_when_it_is_down_and_recovers(
    client: TestClient, redis_server: RedisServer, until: Callable[..., Any]
) -> None:
    redis_server.stop()
    try:
        _, body, took = until("503", lambda: (r := _readyz(client))[0] == 503 and r, timeout=10)
        assert body["status"] == "not ready"
        assert body["checks"]["redis"]["status"] == "failed"
        assert body["checks"]["database"] == OK and body["checks"]["object_store"] == OK
        assert body["checks"]["redis"]["error"] in {"ConnectionError", "timeout"}, body
        assert took < 2.0
        # nothing but the names, ok/failed and an error class: no host, port, URL or trace
        text = client.get("/readyz").text
        assert str(redis_server.port) not in text and "127.0.0.1" not in text and "Traceback" not in text
    finally:
        redis_server.start()
    until("ready again", lambda: _readyz(client)[0] == 200, timeout=10)


def test_readyz_names_the_object_store_when_s3_is_down(
    client: TestClient, s3_server: S3Server, until: Callable[..., Any]
) -> None:
    s3_server.stop()
    try:
        _, body, took = until("503", lambda: (r := _readyz(client))[0] == 503 and r, timeout=10)
        assert body["checks"]["object_store"]["status"] == "failed"
        assert body["checks"]["database"] == OK and body["checks"]["redis"] == OK
        assert took < 2.0
        assert s3_server.endpoint not in client.get("/readyz").text
    finally:
        s3_server.start(timeout=60)
    until("ready again", lambda: _readyz(client)[0] == 200, timeout=20)


def test_a_frozen_redis_makes_readyz_answer_timeout_within_two_seconds(
    client: TestClient, redis_server: RedisServer, until: Callable[..., Any]
) -> None:
    """SIGSTOP: the kernel accepts the connection and nobody answers (the client's own timeout is 5 s)."""
    assert _readyz(client)[0] == 200
    redis_server.pause()
    try:
        time.sleep(1.1)  # past the reuse of the last result
        status, body, took = _readyz(client)
        assert status == 503 and body["checks"]["redis"] == {"status": "failed", "error": "timeout"}
        assert took < 2.0
        time.sleep(1.1)  # still hanging: answered from the same running check, not a second thread
        status, body, took = _readyz(client)
        assert status == 503 and took < 2.0
    finally:
        redis_server.resume()
    until("ready again", lambda: _readyz(client)[0] == 200, timeout=10)


def test_readyz_names_the_database_when_it_is_gone(
    store: ObjectStore, new_pg_database: Callable[[], str]
) -> None:
    """A process whose PostgreSQL database is dropped under it; no Redis in this process (no check for it)."""
    url = new_pg_database().replace("gridwatch@", "gridwatch:db-Secret-9@")  # trust auth: any password
    db = MetadataDB(url)
    db.migrate()
    try:
        with TestClient(create_app(AppState(db, store, 30))) as client:
            assert client.get("/readyz").status_code == 200
            db.close()  # drop the pooled connections, then the database
            name, port = url.rsplit("/", 1)[1], int(url.rsplit(":", 1)[1].split("/")[0])
            with psycopg.connect(host="127.0.0.1", port=port, user="gridwatch", dbname="postgres") as admin:
                admin.autocommit = True
                admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            time.sleep(1.1)  # past the reuse of the last result
            r = client.get("/readyz")
    finally:
        db.close()
    assert r.status_code == 503
    checks = {"database": {"status": "failed", "error": "OperationalError"}, "object_store": OK}
    assert r.json() == {"status": "not ready", "checks": checks}
    assert "db-Secret-9" not in r.text and name not in r.text


def test_readyz_names_the_object_store_when_its_bucket_is_missing_or_its_key_wrong(
    db: MetadataDB, s3_server: S3Server, s3_keys: tuple[str, str]
) -> None:
    access, secret = s3_keys
    for store, error in (
        (ObjectStore(s3_server.endpoint, access, secret, "no-such-bucket"), "NoSuchBucket"),
        (ObjectStore(s3_server.endpoint, access, "wrong-Secret-7", "health-test"), "SignatureDoesNotMatch"),
    ):
        with TestClient(create_app(AppState(db, store, 30))) as client:
            r = client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["checks"]["object_store"] == {"status": "failed", "error": error}
        assert secret not in r.text and "wrong-Secret-7" not in r.text


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on a thread of its own: this xdist worker's thread may hold a running loop already
    (Playwright's sync API keeps one for the browser tests' session), and asyncio.run refuses to nest."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def test_checks_run_at_once_and_a_hung_one_is_not_started_twice(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "gridwatch.api_health")
    starts: list[str] = []
    failing = True

    def hang() -> None:
        starts.append("hang")
        time.sleep(3)

    def fail() -> None:
        if failing:
            raise ValueError("secret detail")

    checks = ReadyChecks({"ok": lambda: None, "hang": hang, "fail": fail}, timeout_s=0.3, fresh_s=0.0)
    started = time.monotonic()
    first = _run(checks.run())
    second = _run(checks.run())
    assert time.monotonic() - started < 2.5  # 2 x 0.3 s, not the 3 s hang: the hung check timed out
    assert first == second
    assert first.model_dump(exclude_none=True) == {
        "status": "not ready",
        "checks": {
            "ok": OK,
            "hang": {"status": "failed", "error": "timeout"},
            "fail": {"status": "failed", "error": "ValueError"},
        },
    }
    assert starts == ["hang"]
    # logged once per change, with the detail the answer leaves out
    failing = False
    assert _run(checks.run()).checks["fail"] == CheckResult(status="ok")
    logged = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "gridwatch.api_health"]
    assert sorted(logged) == [
        ("INFO", "readiness: fail answers again"),
        ("WARNING", "readiness: fail check failed: ValueError: secret detail"),
        ("WARNING", "readiness: hang check failed: no answer within 0.3 s"),
    ]
