"""A worker writes for a camera only under its current lease, in a real Redis and a real database:

- before an alert, the lease is checked in Redis: a lease that moved to another worker (this one was paused)
  is refused; while Redis does not answer, the lease as the worker sees it (which ends first) decides;
- the database keeps its own fence (`camera_fences`): an alert under a lower token than the highest that
  claimed the camera is refused inside the alert's transaction, and nothing is written;
- a camera state is written only if the lease in Redis is still the worker's (one Lua script).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from alerts.camera_status import STATUS_KEY, STATUS_STREAM, CameraStatusPublisher
from gridwatch.cluster import DEFAULT_KEYS, LeaseKeeper, lease_value
from gridwatch.runtime import Runtime
from gridwatch.services import RedisServer
from gridwatch.settings import Settings
from ingest.state import StateChange, StreamState
from storage.metadata import AlertRecord, Fence, MetadataDB, StaleFence


def _alert(camera_id: str, alert_id: str) -> AlertRecord:
    now = datetime.now(UTC)
    return AlertRecord(alert_id, camera_id, "v1", "g1", "person", 0.9, (0, 0, 10, 10), now, now)


def test_the_fence_is_checked_in_redis_before_an_alert(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", binary="redis-server").start()
    try:
        client = redis.Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        keeper = LeaseKeeper(client, "w1", 4, lambda: ["gate", "road"], lease_ttl_ms=30_000)
        keeper.tick()
        assert set(keeper.owned()) == {"gate", "road"}
        runtime = Runtime(Settings(), mode="worker", keeper=keeper, worker_id="w1")
        runtime._lease_client = client
        token = keeper.owned()["gate"]
        assert runtime.write_fence("gate") == Fence("gate", "w1", token)
        assert runtime.write_fence("road") == Fence("road", "w1", keeper.owned()["road"])
        assert runtime.write_fence("mill") is None  # not held at all
        client.set("gridwatch:lease:gate", f"{token + 1}:w2")  # w1 was paused; w2 holds it now
        assert runtime.write_fence("gate") is None
        server.stop()
        assert runtime.write_fence("road") is not None  # Redis away: the local lease (still valid) decides
    finally:
        server.stop()


def test_the_database_refuses_an_alert_under_an_older_token(db: MetadataDB) -> None:
    db.add_alert(_alert("gate", "a" * 32), Fence("gate", "w1", 7))
    written = db.get_alert("a" * 32)
    assert written is not None and (written.worker_id, written.fence_token) == ("w1", 7)
    db.claim_fence(Fence("gate", "w2", 8))  # w2 took the camera and started it
    with pytest.raises(
        StaleFence, match=r"camera gate: .*worker w1 under lease token 7 .*token 8 of worker w2"
    ):
        db.add_alert(_alert("gate", "b" * 32), Fence("gate", "w1", 7))  # w1 woke up from a pause
    assert db.get_alert("b" * 32) is None  # nothing half-written
    with pytest.raises(StaleFence):
        db.claim_fence(Fence("gate", "w1", 7))
    fence = db.camera_fence("gate")
    assert fence is not None and (fence.worker_id, fence.token) == ("w2", 8)
    db.add_alert(_alert("gate", "c" * 32), Fence("gate", "w2", 8))  # the owner's own token: again and again
    db.add_alert(_alert("gate", "d" * 32), Fence("gate", "w2", 8))
    db.add_alert(_alert("road", "e" * 32), Fence("road", "w1", 3))  # fences are per camera
    with pytest.raises(StaleFence):  # the same token from another worker: Redis handed it out twice
        db.claim_fence(Fence("road", "w2", 3))
    db.add_alert(_alert("gate", "f" * 32))  # `gridwatch run`: no fence, nothing recorded
    unfenced = db.get_alert("f" * 32)
    assert unfenced is not None and unfenced.fence_token is None
    with pytest.raises(ValueError, match="fence is for camera road"):
        db.add_alert(_alert("gate", "9" * 32), Fence("road", "w1", 3))


def test_racing_claims_leave_the_highest_token(db: MetadataDB) -> None:
    """Workers claiming one camera at once (a handover, a retry): whatever the order, the fence ends at the
    highest token, and every claim below one already recorded was refused."""
    results: dict[int, bool] = {}

    def claim(token: int) -> None:
        try:
            db.claim_fence(Fence("gate", f"w{token}", token))
            results[token] = True
        except StaleFence:
            results[token] = False

    threads = [threading.Thread(target=claim, args=(t,)) for t in range(1, 13)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fence = db.camera_fence("gate")
    assert fence is not None and fence.token == 12 and results[12]
    assert len(results) == 12


def _change(camera_id: str, new: StreamState) -> StateChange:
    return StateChange(camera_id, "detect", StreamState.CONNECTING, new, time.time())


def test_a_camera_state_is_written_only_under_the_lease(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    stream = f"{STATUS_STREAM}:fence-test"
    leases = {"gate": lease_value("w1", 5)}
    client.set(DEFAULT_KEYS.lease("gate"), leases["gate"])
    client.set(DEFAULT_KEYS.lease("road"), lease_value("w2", 9))  # w2 holds road; w1 still thinks it does

    def guard(camera_id: str) -> tuple[str, str] | None:
        return (DEFAULT_KEYS.lease(camera_id), lease_value("w1", 4 if camera_id == "road" else 5))

    publisher = CameraStatusPublisher(client, stream=stream, guard=guard)
    publisher._write(_change("gate", StreamState.ONLINE))
    publisher._write(_change("road", StreamState.OFFLINE))  # w1 lost it: must not overwrite w2's state
    assert (publisher.published, publisher.refused) == (1, 1)
    assert client.hget(STATUS_KEY.format(camera="gate"), "detect_state") == b"online"
    assert not client.exists(STATUS_KEY.format(camera="road"))
    entries = client.xrange(stream)
    assert [e[1][b"camera_id"] for e in entries] == [b"gate"]
    assert entries[0][1][b"state"] == b"online" and entries[0][1][b"reason"] == b""
    not_held = CameraStatusPublisher(client, stream=stream, guard=lambda _camera: None)
    not_held._write(_change("gate", StreamState.OFFLINE))
    assert (
        not_held.refused == 1 and client.hget(STATUS_KEY.format(camera="gate"), "detect_state") == b"online"
    )


def test_a_token_the_database_has_seen_is_replaced_by_a_higher_one(tmp_path: Path, db: MetadataDB) -> None:
    """Redis lost its latest writes (AOF everysec) and hands out a token the database has seen: the worker
    does not start the camera under it; it raises the camera's counter past it and gives the lease up, and
    the next tick brings the camera back under a higher token, which the database takes."""
    server = RedisServer(tmp_path / "redis", binary="redis-server").start()
    try:
        client = redis.Redis.from_url(server.url, socket_timeout=2)
        keeper = LeaseKeeper(client, "w1", 4, lambda: ["gate"], lease_ttl_ms=30_000)
        keeper.tick()
        token = keeper.owned()["gate"]
        db.claim_fence(Fence("gate", "w2", token + 5))  # before the loss, w2 had held it up to token + 5
        runtime = Runtime(Settings(), mode="worker", keeper=keeper, worker_id="w1", db=db)
        runtime._lease_client = client
        assert not runtime._claim("gate", token)
        assert keeper.owned() == {} and client.get(DEFAULT_KEYS.lease("gate")) is None
        assert int(client.get(DEFAULT_KEYS.fence("gate")) or 0) == token + 5
        keeper.tick()
        again = keeper.owned()["gate"]
        assert again == token + 6
        assert runtime._claim("gate", again)
        fence = db.camera_fence("gate")
        assert fence is not None and (fence.worker_id, fence.token) == ("w1", token + 6)
    finally:
        server.stop()
