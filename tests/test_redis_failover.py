"""Redis with a replica and Sentinel, all real redis-server processes: the bus and the leases follow a
failover to the promoted replica (`redis+sentinel://`), a lease confirmed by the replica (WAIT) survives
it, and with a silent replica no lease is trusted: not taken, and not extended past its last confirmed
deadline."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
import yaml

from alerts.bus import AlertBus, BusMessage
from alerts.redis_connect import connect, parse_sentinel_url
from gridwatch.cluster import ClusterKeys, LeaseKeeper, LeaseStore
from gridwatch.cluster.leases import parse_lease_value
from gridwatch.services import RedisServer

if TYPE_CHECKING:
    from conftest import RedisHA

REPO = Path(__file__).resolve().parents[1]


def _message(alert_id: str) -> BusMessage:
    return BusMessage(alert_id, "alert", "cam", "v1", "g1", "person", 0.9, "2026-12-02T06:00:00+00:00")


def test_the_bus_and_a_confirmed_lease_survive_a_failover_to_the_replica(
    redis_ha: RedisHA, until: Callable[..., Any]
) -> None:
    bus = AlertBus.from_url(redis_ha.sentinel.url, "ha:alerts")
    bus.publish(_message("a" * 32))
    store = LeaseStore(connect(redis_ha.sentinel.url, socket_timeout=2), ClusterKeys("ha"), replicas=1,
                       replica_timeout_ms=1000)  # fmt: skip
    got = store.acquire("worker-a", ["cam"], ttl_ms=60_000)
    assert set(got.tokens) == {"cam"} and not got.unconfirmed
    token = got.tokens["cam"]
    old_primary = redis_ha.primary.port
    assert redis_ha.primary_port() == old_primary

    assert redis_ha.primary.pid is not None
    os.killpg(redis_ha.primary.pid, signal.SIGKILL)  # the primary dies; the sentinel promotes the replica
    until("the sentinel promotes the replica", lambda: redis_ha.primary_port() == redis_ha.replica.port, 30)

    def published() -> bool:
        try:
            bus.publish(_message("b" * 32))
        except (redis.ConnectionError, redis.ReadOnlyError, redis.TimeoutError):
            return False
        return True

    until("the bus publishes to the new primary", published, 15)
    promoted = redis.Redis(port=redis_ha.replica.port)
    assert promoted.info("replication")["role"] == "master"
    ids = [fields[b"alert_id"] for _, fields in promoted.xrange("ha:alerts")]
    assert ids == [b"a" * 32, b"b" * 32]  # the entry from before the failover was replicated
    # the lease the replica confirmed is there: nobody else can take the camera
    assert parse_lease_value(promoted.get("ha:lease:cam")) == ("worker-a", token)
    other = store.acquire("worker-b", ["cam"], ttl_ms=60_000)
    assert other.tokens == {} and "cam" in other.held_by_others
    assert store.renew("worker-a", {"cam": token}, ttl_ms=60_000) == set()  # no replica left to confirm
    bus.close()


def test_with_a_silent_replica_no_lease_is_taken_or_trusted_longer(
    redis_ha: RedisHA, until: Callable[..., Any]
) -> None:
    client = redis.Redis(port=redis_ha.primary.port, socket_timeout=5)
    keys = ClusterKeys("silent")
    store = LeaseStore(client, keys, replicas=1, replica_timeout_ms=150)
    held = store.acquire("w", ["cam-1"], ttl_ms=30_000).tokens
    assert set(held) == {"cam-1"}

    redis_ha.replica.pause()  # frozen: it acknowledges nothing
    try:
        got = store.acquire("w", ["cam-2"], ttl_ms=30_000)
        assert got.tokens == {} and set(got.unconfirmed) == {"cam-2"}
        renewal = store.renew_leases("w", held, ttl_ms=30_000)
        assert renewal.renewed == set() and renewal.unconfirmed == {"cam-1"}

        # a keeper takes nothing it cannot have confirmed, and keeps what it has only to its deadline
        keeper = LeaseKeeper(client, "k", 5, lambda: ["cam-3"], lease_ttl_ms=900, keys=keys, replicas=1,
                             replica_timeout_ms=100)  # fmt: skip
        lost: list[str] = []
        keeper.on_lost = lambda camera, _token: lost.append(camera)
        report = keeper.tick()
        assert report.acquired == () and keeper.owned() == {}
    finally:
        redis_ha.replica.resume()
    until(
        "the keeper takes the camera once the replica confirms",
        lambda: keeper.tick().acquired == ("cam-3",),
        10,
    )
    assert set(keeper.owned()) == {"cam-3"}

    deadline = keeper.held_until()["cam-3"]
    redis_ha.replica.pause()
    try:
        renewals: list[int] = []
        while keeper.owned():  # renewals go on in Redis, unconfirmed: the local deadline never moves
            renewals.append(keeper.tick().renewed)
            assert keeper.held_until().get("cam-3", deadline) == deadline
            assert len(renewals) < 200, "the lease stayed trusted for 10 s with no replica confirming it"
            time.sleep(0.05)
        assert keeper.clock() >= deadline  # dropped at the last confirmed deadline, not before
        assert set(renewals) == {0}  # none counted as renewed
        assert client.get(keys.lease("cam-3")) is not None  # Redis still has it: not lost, not trusted
    finally:
        redis_ha.replica.resume()
    keeper.stop()


# -- the compose file's Sentinel deployment (docker/compose.sentinel.yaml), run with local processes ------

COMPOSE_FILES = [REPO / "docker" / "compose.yaml", REPO / "docker" / "compose.sentinel.yaml"]


def _merged_compose() -> dict[str, Any]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")}
    files = [arg for path in COMPOSE_FILES for arg in ("-f", str(path))]
    result = subprocess.run(
        ["docker-compose", *files, "config"], capture_output=True, text=True, timeout=60,
        env=environ | {"GRIDWATCH_SECRET_KEY": "k"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


class ComposeSentinel(RedisServer):
    """One of the compose file's Sentinels: its own entrypoint script, run by `sh` here. Only what Docker
    provides is replaced: the volume (`/data`), the host names of the primary, and the port (three share
    this machine); the monitor, quorum and timing directives are the file's."""

    name = "compose sentinel"

    def __init__(self, data_dir: Path, script: str, primary_port: int) -> None:
        system = shutil.which("redis-server")
        assert system, "Debian redis-server is not installed"
        super().__init__(data_dir, binary=system)
        self.script = script
        self.primary_port = primary_port

    def _command(self) -> list[str]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        script = self.script.replace("/data/", f"{self.data_dir}/")
        script = script.replace("'port 26379'", f"'port {self.port}' 'bind 127.0.0.1'")
        script = script.replace(" redis 6379 ", f" 127.0.0.1 {self.primary_port} ")
        script = script.replace("exec redis-server ", f"exec {self.binary} ")
        return ["sh", "-c", script]


def test_the_compose_sentinels_fail_over_to_the_replica_and_the_workers_follow(
    tmp_path: Path, until: Callable[..., Any]
) -> None:
    services = _merged_compose()["services"]
    entry = services["sentinel-1"]["entrypoint"]
    assert entry[:2] == ["sh", "-c"] and {services[f"sentinel-{n}"]["entrypoint"][2] for n in (2, 3)} == {
        entry[2]
    }
    script = entry[2]
    assert "sentinel monitor gridwatch redis 6379 2" in script  # the compose service `redis`, quorum 2 of 3
    replica_command = services["redis-replica"]["command"]
    assert replica_command[replica_command.index("--replicaof") + 1 :][:2] == ["redis", "6379"]
    urls = {services[name]["environment"]["GRIDWATCH_REDIS__URL"] for name in ("api", "dispatcher", "worker")}
    assert len(urls) == 1
    target = parse_sentinel_url(urls.pop())
    assert [host for host, _ in target.sentinels] == ["sentinel-1", "sentinel-2", "sentinel-3"]
    assert services["worker"]["environment"]["GRIDWATCH_WORKER__LEASE_REPLICAS"] == "1"

    system = shutil.which("redis-server")
    primary = RedisServer(tmp_path / "primary", binary=system)
    primary.start()
    replica = RedisServer(tmp_path / "replica", binary=system, replica_of=primary.port)
    replica.start()
    sentinels = [ComposeSentinel(tmp_path / f"sentinel-{n}", script, primary.port) for n in (1, 2, 3)]
    try:
        for sentinel in sentinels:
            sentinel.start()
        local = ",".join(f"127.0.0.1:{s.port}" for s in sentinels)
        url = f"redis+sentinel://{local}/{target.service}/{target.db}"
        watcher = redis.Redis(port=sentinels[0].port, decode_responses=True)

        def ready() -> bool:
            known = watcher.execute_command("SENTINEL", "SENTINELS", target.service)
            return len(known) == 2 and bool(watcher.execute_command("SENTINEL", "REPLICAS", target.service))

        until("the sentinels know each other and the replica", ready, 30)
        synced = redis.Redis(port=replica.port)
        until("the replica syncs", lambda: synced.info("replication").get("master_link_status") == "up", 20)
        store = LeaseStore(connect(url, socket_timeout=2), ClusterKeys("compose"), replicas=1,
                           replica_timeout_ms=1000)  # fmt: skip
        got = store.acquire("worker-a", ["cam"], ttl_ms=120_000)
        assert set(got.tokens) == {"cam"} and not got.unconfirmed

        assert primary.pid is not None
        os.killpg(primary.pid, signal.SIGKILL)
        died = time.monotonic()
        until(
            "two sentinels agree and promote the replica",
            lambda: int(watcher.sentinel_get_master_addr_by_name(target.service)[1]) == replica.port,
            60,
        )
        promoted_after = time.monotonic() - died
        assert promoted_after >= 5 - 0.5, "promoted before down-after-milliseconds (5 s) ran out"
        client = connect(url, socket_timeout=2)

        def holder() -> Any:
            try:
                return client.get("compose:lease:cam")
            except (redis.ConnectionError, redis.TimeoutError):
                return None

        assert parse_lease_value(until("the client reaches the promoted replica", holder, 15)) == (
            "worker-a",
            got.tokens["cam"],
        )
    finally:
        for server in (*sentinels, replica, primary):
            server.stop()
