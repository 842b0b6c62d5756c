"""`read_cluster_view` and `gridwatch cluster` against the session's real Redis: live keepers ticked by
hand, a dead worker whose leases outlive its heartbeat, the numbers checked against what the keepers
themselves hold; the CLI on a real config and SQLite database (text and --json); exit 2 with the Redis URL
masked when Redis does not answer; 10,000 cameras read well under a second; and nothing written."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from typer.testing import CliRunner

from gridwatch.cli import app
from gridwatch.cluster import (
    ClusterKeys,
    ClusterView,
    LeaseKeeper,
    Membership,
    assign,
    lease_value,
    read_cluster_view,
)
from gridwatch.cluster.view import CHUNK
from gridwatch.services import RedisServer
from ingest.ports import free_port
from storage.metadata import MetadataDB
from storage.metadata.records import CameraRecord

REPO = Path(__file__).resolve().parents[3]
CAMERAS = [f"cam{i:02d}" for i in range(15)]
Make = Callable[..., LeaseKeeper]


def build_cluster(make_keeper: Make) -> tuple[list[LeaseKeeper], LeaseKeeper]:
    """A dead worker `dead` that took 4 cameras (its heartbeat ran out, its 60 s leases did not), then
    live `a`, `b` (capacity 5) and `c` (2) ticked by hand: 15 cameras, 12 places, 4 still held by `dead`."""
    dead = make_keeper("dead", 4, CAMERAS, worker_ttl_ms=300, lease_ttl_ms=60_000, tick_s=0.1)
    dead.tick()
    assert len(dead.owned()) == 4
    time.sleep(0.4)  # its heartbeat runs out; it never ticks again
    live = [
        make_keeper("a", 5, CAMERAS, info={"role": "test"}),
        make_keeper("b", 5, CAMERAS),
        make_keeper("c", 2, CAMERAS),
    ]
    for _ in range(3):  # a joins alone, b and c after: the third round finishes the handovers
        for keeper in live:
            keeper.tick()
    return live, dead


def expected_numbers(live: list[LeaseKeeper], dead: LeaseKeeper) -> dict[str, Any]:
    """The view's figures as the keepers' own state has them (their local leases, not Redis), checked
    against the assignment: each live worker holds its cameras but those `dead` still has."""
    stale = set(dead.owned())
    held = {k.worker_id: len(k.owned()) for k in live}
    leased = stale.union(*(k.owned() for k in live))
    unleased = sorted(set(CAMERAS) - leased)
    assignment = assign(CAMERAS, {"a": 5, "b": 5, "c": 2})
    assert held == {w: len(assignment.cameras_of(w) - stale) for w in ("a", "b", "c")}
    assert unleased == sorted(assignment.unassigned - stale)
    return {"held": held, "leased": len(leased), "unleased": unleased}


def test_the_view_counts_live_workers_leases_and_a_dead_workers_stale_leases(
    make_keeper: Make, client: redis.Redis, keys: ClusterKeys
) -> None:
    live, dead = build_cluster(make_keeper)
    want = expected_numbers(live, dead)
    view = read_cluster_view(client, CAMERAS, keys)

    assert [w.worker_id for w in view.workers] == ["a", "b", "c"]
    assert {w.worker_id: w.leases for w in view.workers} == want["held"]
    assert {w.worker_id: w.capacity for w in view.workers} == {"a": 5, "b": 5, "c": 2}
    assert view.live_workers == 3 and view.total_capacity == 12
    assert view.enabled_cameras == 15
    assert view.stale_by_worker == {"dead": 4} and view.stale_leases == 4
    assert view.cameras_leased == want["leased"] == sum(want["held"].values()) + 4
    assert view.cameras_unleased == len(want["unleased"]) and list(view.unleased_sample) == want["unleased"]
    assert view.max_leases == max(want["held"].values())
    assert view.mean_leases == pytest.approx(sum(want["held"].values()) / 3)
    assert view.max_over_mean == pytest.approx(view.max_leases / view.mean_leases)

    a = view.workers[0]
    assert a.host == socket.gethostname() and a.pid == os.getpid()
    assert a.started_at is not None and abs(a.started_at - time.time()) < 60
    assert a.description["role"] == "test" and a.description["capacity"] == 5
    assert all(0 < w.expires_in_s <= 10 for w in view.workers)  # the default worker TTL: 10 s

    # without a camera list the leases are found by SCAN: the same leases, the cameras unknown
    scanned = read_cluster_view(client, None, keys)
    assert scanned.enabled_cameras is None and scanned.cameras_unleased is None
    assert scanned.unleased_sample == ()
    assert scanned.cameras_leased == view.cameras_leased
    assert [(w.worker_id, w.leases) for w in scanned.workers] == list(want["held"].items())
    assert scanned.stale_by_worker == {"dead": 4}


def test_reading_the_view_writes_nothing_not_even_the_pruning_of_a_dead_worker(
    make_keeper: Make, client: redis.Redis, keys: ClusterKeys
) -> None:
    """A heartbeat or `live_workers()` would remove the expired worker; the view only leaves it out."""
    gone = make_keeper("gone", 3, CAMERAS[:5], worker_ttl_ms=300, lease_ttl_ms=60_000, tick_s=0.1)
    gone.tick()
    time.sleep(0.4)
    before = _dump(client, keys)
    view = read_cluster_view(client, CAMERAS[:5], keys)
    assert _dump(client, keys) == before
    assert client.zscore(keys.workers, "gone") is not None  # still in the zset, score in the past
    assert view.live_workers == 0 and view.total_capacity == 0
    assert view.stale_by_worker == {"gone": 3} and view.cameras_leased == 3
    assert view.cameras_unleased == 2
    assert view.max_leases == 0 and view.mean_leases == 0.0 and view.max_over_mean == 0.0


def test_a_lease_value_that_does_not_parse_counts_as_stale_not_a_crash(
    client: redis.Redis, keys: ClusterKeys
) -> None:
    client.set(keys.lease("odd"), "not-a-lease", px=60_000)
    client.set(keys.lease("fine"), lease_value("nobody", 7), px=60_000)
    view = read_cluster_view(client, None, keys)
    assert view.cameras_leased == 2 and view.stale_by_worker == {"?": 1, "nobody": 1}


def test_ten_thousand_cameras_are_read_in_a_few_batched_commands(
    client: redis.Redis, keys: ClusterKeys
) -> None:
    """The view's cost is counted in Redis commands, not timed (bench/lease_sim.py times it): 10,000
    leases are 10 MGETs of CHUNK keys, the 50 workers' descriptions one more, and no per-camera GET."""
    cameras = [f"cam{i:05d}" for i in range(10_000)]
    workers = [f"w{i:02d}" for i in range(50)]
    for worker in workers:
        Membership(client, worker, 200, keys=keys, ttl_ms=60_000).register()
    pipe = client.pipeline(transaction=False)
    for i, camera in enumerate(cameras[:9_000]):
        pipe.set(keys.lease(camera), lease_value(workers[i % 50], i + 1), px=60_000)
    pipe.execute()
    client.config_resetstat()
    view = read_cluster_view(client, cameras, keys)
    stats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): stat["calls"] for name, stat in stats.items()}
    calls.pop("info", None)
    assert calls.get("mget") == 10_000 // CHUNK + 1, calls
    assert "get" not in calls and "scan" not in calls and sum(calls.values()) <= 20, calls
    assert view.enabled_cameras == 10_000 and view.cameras_leased == 9_000
    assert view.cameras_unleased == 1_000 and view.unleased_sample == tuple(cameras[9_000:9_020])
    assert {w.leases for w in view.workers} == {180} and view.stale_leases == 0
    assert view.total_capacity == 10_000 and view.max_over_mean == 1.0


# -- the CLI ------------------------------------------------------------------------------------------


def _write_config(tmp_path: Path, redis_url: str | None, database_url: str | None) -> Path:
    config: dict[str, Any] = {"data_dir": str(tmp_path / "data")}
    if redis_url is not None:
        config["redis"] = {"url": redis_url}
    if database_url is not None:
        config["database"] = {"url": database_url}
    path = tmp_path / "gridwatch.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _database(tmp_path: Path) -> str:
    """A SQLite database with the 15 cameras enabled and one more disabled (not counted)."""
    url = f"sqlite:///{tmp_path / 'cluster.db'}"
    db = MetadataDB(url)
    db.create_schema()
    rows = [CameraRecord(c, c, "v1", "g1", f"rtsp://10.0.0.1/{c}", 2.0) for c in CAMERAS]
    rows.append(CameraRecord("off", "off", "v1", "g1", "rtsp://10.0.0.1/off", 2.0, enabled=False))
    db.upsert_cameras(rows)
    db.close()
    return url


def _gridwatch(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")}
    return subprocess.run(
        [sys.executable, "-m", "gridwatch.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_cli_prints_the_cluster_as_text_and_json(
    make_keeper: Make, keys: ClusterKeys, redis_server: RedisServer, tmp_path: Path
) -> None:
    config = _write_config(tmp_path, redis_server.url, _database(tmp_path))
    live, dead = build_cluster(make_keeper)
    want = expected_numbers(live, dead)

    text = _gridwatch("cluster", str(config), "--prefix", keys.prefix)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == f"cluster {keys.prefix}: 3 live worker(s), capacity 12"
    assert lines[1].split() == ["worker", "host", "pid", "up", "capacity", "heartbeat", "leases"]
    rows = {line.split()[0]: line.split() for line in lines[2:5]}
    for worker, capacity in (("a", "5"), ("b", "5"), ("c", "2")):
        assert rows[worker][1:3] == [socket.gethostname(), str(os.getpid())]
        assert rows[worker][4] == capacity and rows[worker][-1] == str(want["held"][worker])
        assert rows[worker][5] == "in" and rows[worker][7] == "s"
    unleased = f": {', '.join(want['unleased'])}" if want["unleased"] else ""
    assert lines[5] == (
        f"cameras: 15 enabled, {want['leased']} leased, {len(want['unleased'])} not leased{unleased}"
    )
    assert lines[6] == "stale leases: 4 (workers not live; the leases run out by their TTL): dead 4"
    mean = sum(want["held"].values()) / 3
    top = max(want["held"].values())
    balance = f"balance: max {top}, mean {mean:.2f} leases per live worker (max/mean {top / mean:.2f})"
    assert lines[7] == balance

    as_json = CliRunner().invoke(
        app, ["cluster", str(config), "--json", "--prefix", keys.prefix], env=_no_gridwatch_env()
    )
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["totals"] == {
        "live_workers": 3,
        "total_capacity": 12,
        "enabled_cameras": 15,
        "cameras_leased": want["leased"],
        "cameras_unleased": len(want["unleased"]),
        "unleased_sample": want["unleased"],
        "stale_leases": 4,
        "stale_by_worker": {"dead": 4},
    }
    assert {w["id"]: w["leases"] for w in data["workers"]} == want["held"]
    assert data["workers"][0]["host"] == socket.gethostname() and data["workers"][0]["pid"] == os.getpid()
    assert data["balance"] == {
        "max_leases": top,
        "mean_leases": round(mean, 3),
        "max_over_mean": round(top / mean, 3),
    }


def test_without_a_database_the_enabled_cameras_are_unknown(
    make_keeper: Make, keys: ClusterKeys, redis_server: RedisServer, tmp_path: Path
) -> None:
    make_keeper("solo", 3, CAMERAS).tick()
    config = _write_config(tmp_path, redis_server.url, None)
    args = ["cluster", str(config), "--prefix", keys.prefix]
    result = CliRunner().invoke(app, args, env=_no_gridwatch_env())
    assert result.exit_code == 0, result.output
    assert "cameras: enabled unknown (no database.url), 3 leased" in result.stdout
    data = json.loads(CliRunner().invoke(app, [*args, "--json"], env=_no_gridwatch_env()).stdout)
    assert data["totals"]["enabled_cameras"] is None and data["totals"]["cameras_unleased"] is None


def test_unreachable_redis_exits_2_naming_the_url_with_the_password_masked(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    config = _write_config(tmp_path, f"redis://:hunter2-secret@127.0.0.1:{port}/0", None)
    result = _gridwatch("cluster", str(config))
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    masked = f"redis://:***@127.0.0.1:{port}/0"
    assert lines[0].startswith(f"error: cannot read the cluster from Redis at {masked}: ")
    assert "hunter2" not in result.stderr


def test_no_redis_url_exits_2(tmp_path: Path) -> None:
    config = _write_config(tmp_path, None, None)
    result = CliRunner().invoke(app, ["cluster", str(config)], env=_no_gridwatch_env())
    assert result.exit_code == 2
    assert "error: `gridwatch cluster` needs redis.url" in result.stderr


def _no_gridwatch_env() -> dict[str, str | None]:
    """CliRunner's env: None removes a variable, so the test's GRIDWATCH_* cannot change the config."""
    return {k: None for k in os.environ if k.startswith("GRIDWATCH_")}


def _dump(client: redis.Redis, keys: ClusterKeys) -> dict[str, Any]:
    """Every key under the test's prefix with its value (TTLs left out: they tick down)."""
    dumped: dict[str, Any] = {}
    for key in sorted(client.scan_iter(match=f"{keys.prefix}:*")):
        kind = client.type(key)
        if kind == b"string":
            dumped[key] = client.get(key)
        elif kind == b"zset":
            dumped[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"hash":
            dumped[key] = client.hgetall(key)
        else:
            dumped[key] = kind
    return dumped


def test_the_view_is_exported(client: redis.Redis, keys: ClusterKeys) -> None:
    assert isinstance(read_cluster_view(client, [], keys), ClusterView)


def test_a_settling_worker_shows_as_such_with_its_capacity(
    make_keeper: Make, client: redis.Redis, keys: ClusterKeys
) -> None:
    settling = make_keeper("s", 7, CAMERAS, settle_s=60.0)
    settling.tick()
    view = read_cluster_view(client, CAMERAS, keys)
    (worker,) = view.workers
    assert (worker.worker_id, worker.capacity, worker.settling, worker.leases) == ("s", 7, True, 0)
    assert worker.to_dict()["settling"] is True and view.total_capacity == 7
