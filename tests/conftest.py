"""Shared fixtures: real servers (Redis, SeaweedFS S3, GStreamer RTSP, PostgreSQL) on free loopback ports,
models, media, and metadata databases on both dialects.

Nothing here skips: a missing server, tool, model or clip is a test failure (`make test` installs them).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gridwatch.services import RedisServer, S3Server
from storage.metadata import MetadataDB

REPO = Path(__file__).resolve().parents[1]
S3_ACCESS = "gw-test-access"
S3_SECRET = "gw-test-secret-Zq81x"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return Path(os.environ.get("GRIDWATCH_MODELS_DIR", REPO / ".cache" / "models"))


@pytest.fixture(scope="session")
def media_dir() -> Path:
    return Path(os.environ.get("GRIDWATCH_MEDIA_DIR", REPO / ".cache" / "media"))


@pytest.fixture(scope="session")
def media(media_dir: Path) -> dict[str, Path]:
    from ingest.simulator.media import prepare_media

    return prepare_media(media_dir, progress=lambda _line: None)


@pytest.fixture(scope="session")
def s3_keys() -> tuple[str, str]:
    return S3_ACCESS, S3_SECRET


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), binary="redis-server")
    with server:
        yield server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3"), S3_ACCESS, S3_SECRET)
    server.start(timeout=60)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """Make a real, tiny file system (a tmpfs of `size` bytes) for disk-full tests: writes get ENOSPC.

    Mounting needs root (the test machines run the tests as root); elsewhere the test fails and says so.
    """
    mounts: list[Path] = []

    def make(size: int) -> Path:
        where = tmp_path / f"small-disk-{len(mounts)}"
        where.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"cannot mount a {size}-byte tmpfs for a disk-full test (needs root): {done.stderr}")
        mounts.append(where)
        return where

    yield make
    for where in reversed(mounts):
        subprocess.run(["umount", "--lazy", str(where)], check=False)


# -- metadata databases: SQLite files in tmp_path and a private PostgreSQL cluster (initdb, free port;
# as the `postgres` user when the tests run as root) ------------------------------------------------


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
    """A new, empty database on the session's cluster: each test gets its own."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    port = int(server_url.rsplit(":", 1)[1].split("/")[0])
    with psycopg.connect(
        host="127.0.0.1", port=port, user="gridwatch", dbname="postgres", autocommit=True
    ) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session")
def new_pg_database(postgres_url: str) -> Callable[[], str]:
    """Makes a new, empty database on the session's PostgreSQL and gives its URL (for module fixtures)."""
    return lambda: _fresh_pg_database(postgres_url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty metadata database, once on SQLite (a file) and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'meta' / 'gridwatch.db'}"
    return _fresh_pg_database(request.getfixturevalue("postgres_url"))


@pytest.fixture
def db(db_url: str) -> Iterator[MetadataDB]:
    """A migrated MetadataDB on each dialect."""
    database = MetadataDB(db_url)
    database.migrate()
    yield database
    database.close()


def _until(what: str, probe: Callable[[], Any], timeout: float = 10.0, every: float = 0.02) -> Any:
    """Poll `probe` until it gives something truthy and return it; fail saying `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f} s: {what}")
        time.sleep(every)


@pytest.fixture
def until() -> Callable[..., Any]:
    """`until(what, probe, timeout=10, every=0.02)`: wait for a condition, with a deadline."""
    return _until


@pytest.fixture
def api_token() -> Callable[..., str]:
    """`api_token(db, user_id, role, team_id=None)`: an API token for a user (created if missing), as the
    `Authorization` header's value: `{"Authorization": api_token(db, "op", "operator")}`."""
    from gridwatch.auth.tokens import new_api_token
    from storage.metadata import UserRecord

    def make(db: MetadataDB, user_id: str, role: str, team_id: str | None = None) -> str:
        if db.get_user(user_id) is None:
            db.upsert_users([UserRecord(id=user_id, name=user_id, role=role, team_id=team_id)])  # type: ignore[arg-type]
        new = new_api_token()
        db.create_api_token(user_id=user_id, name="test", token_hash=new.token_hash, prefix=new.prefix)
        return f"Bearer {new.token}"

    return make
