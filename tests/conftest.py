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
from ingest.ports import free_port
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
    # One server for the whole session: every test's bucket takes a volume, and the automatic count (free
    # disk / volume size) ran out on a smaller CI disk (HTTP 500 on writes to late buckets).
    where = tmp_path_factory.mktemp("s3")
    server = S3Server(where, S3_ACCESS, S3_SECRET, max_volumes=2000, volume_size_mb=64)
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
    return free_port()


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
             "-c", "full_page_writes=off", "-c", "max_connections=200"],
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


def _drop_pg_database(database_url: str) -> None:
    """Drops a test's database (FORCE: a connection a test left open does not keep it): a session makes
    hundreds, about 8 MB each, and CI's disk may be small."""
    name = database_url.rsplit("/", 1)[1]
    port = int(database_url.rsplit(":", 1)[1].split("/")[0])
    with psycopg.connect(
        host="127.0.0.1", port=port, user="gridwatch", dbname="postgres", autocommit=True
    ) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty metadata database, once on SQLite (a file) and once on PostgreSQL (dropped
    after the test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'meta' / 'gridwatch.db'}"
        return
    url = _fresh_pg_database(request.getfixturevalue("postgres_url"))
    yield url
    _drop_pg_database(url)


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


# -- Redis with a replica and a Sentinel (for failover tests): real redis-server processes -------------


class SentinelServer(RedisServer):
    """`redis-server --sentinel` on 127.0.0.1, monitoring the primary at `primary_port` as `service`
    (quorum 1: this one sentinel decides; down after `down_after_ms`)."""

    name = "redis sentinel"

    def __init__(
        self, data_dir: Path, primary_port: int, service: str = "gridwatch", down_after_ms: int = 1000
    ) -> None:
        system = shutil.which("redis-server")
        assert system, "Debian redis-server is not installed"
        super().__init__(data_dir, binary=system)
        self.primary_port = primary_port
        self.service = service
        self.down_after_ms = down_after_ms

    @property
    def url(self) -> str:
        """The `redis+sentinel://` URL of the monitored service."""
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.service}"

    def _command(self) -> list[str]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "sentinel.conf"  # Sentinel rewrites it: a file of its own
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.data_dir}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.primary_port} 1\n"
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.service} 5000\n"
            f"sentinel parallel-syncs {self.service} 1\n"
        )
        return [self.binary, str(conf), "--sentinel"]


class RedisHA:
    """A primary, a replica of it and a sentinel watching them (see `redis_ha`)."""

    def __init__(self, root: Path) -> None:
        system = shutil.which("redis-server")
        assert system, "Debian redis-server is not installed"
        self.primary = RedisServer(root / "primary", binary=system)
        self.primary.start()
        self.replica = RedisServer(root / "replica", binary=system, replica_of=self.primary.port)
        self.replica.start()
        self.sentinel = SentinelServer(root / "sentinel", self.primary.port)
        self.sentinel.start()

    def wait_replicating(self, timeout: float = 20.0) -> None:
        """Until the replica is in sync and the sentinel knows it (it can then be promoted)."""
        import redis

        replica = redis.Redis(port=self.replica.port)
        sentinel = redis.Redis(port=self.sentinel.port, decode_responses=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            link = replica.info("replication").get("master_link_status")
            known = sentinel.execute_command("SENTINEL", "REPLICAS", self.sentinel.service)
            if link == "up" and known:
                return
            time.sleep(0.1)
        pytest.fail(f"the replica did not sync with the primary within {timeout:.0f} s")

    def primary_port(self) -> int:
        """The port of the primary the sentinel names now."""
        import redis

        sentinel = redis.Redis(port=self.sentinel.port, decode_responses=True)
        _host, port = sentinel.sentinel_get_master_addr_by_name(self.sentinel.service)
        return int(port)

    def stop(self) -> None:
        for server in (self.sentinel, self.replica, self.primary):
            server.stop()


@pytest.fixture
def redis_ha(tmp_path: Path) -> Iterator[RedisHA]:
    """A Redis primary with one replica and a Sentinel (service `gridwatch`), for this test alone."""
    ha = RedisHA(tmp_path / "redis-ha")
    try:
        ha.wait_replicating()
        yield ha
    finally:
        ha.stop()
