"""The dispatcher against real servers: alerts on a real Redis stream -> incidents in the database
(SQLite and PostgreSQL) -> a signed webhook on a local HTTP receiver; escalation, retries, redelivery."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from alerts.bus import AlertBus, BusMessage, StreamConsumer
from alerts.dispatch_loop import DispatchLoop
from alerts.dispatcher import Channel, DeliveryPending, Dispatcher
from alerts.lifecycle import next_status
from alerts.notifiers.base import Notification
from alerts.notifiers.retry import RetryPolicy
from alerts.notifiers.testing import HttpReceiver, Reply
from alerts.notifiers.webhook import WebhookNotifier, verify_signature
from alerts.outbox import OutboxPublisher
from alerts.routing import Router, Team
from alerts.rules import Rule, RuleEngine
from detect.tracker import Track
from gridwatch.dispatch import redis_lock
from gridwatch.services import RedisServer
from storage.metadata import AlertRecord, MetadataDB

SECRET = "webhook-secret-for-tests"
FAST = RetryPolicy(max_attempts=4, base_s=0.05, max_s=0.2)
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _router() -> Router:
    teams = [
        Team("east", "East patrol", ("li",), fallback="joint"),
        Team("joint", "Joint emergency team", ("chen",)),
        Team("centre", "Monitoring centre", ("op1",)),
    ]
    return Router(teams, {"g1": "east", "g2": "east"}, fallback_team="joint", monitoring_centre="centre")


def _alert(db: MetadataDB, camera: str, label: str, at: datetime, grid: str = "g1") -> BusMessage:
    alert_id = uuid.uuid4().hex
    db.add_alert(
        AlertRecord(
            id=alert_id,
            camera_id=camera,
            village="v1",
            grid=grid,
            label=label,
            score=0.9,
            bbox=(1, 2, 3, 4),
            created_at=at,
            frame_time=at,
            severity="critical" if label in ("fire", "smoke") else "normal",
        )
    )
    return BusMessage(
        alert_id=alert_id,
        kind="alert",
        camera_id=camera,
        village="v1",
        grid=grid,
        label=label,
        score=0.9,
        created_at=at.isoformat(),
        severity="critical" if label in ("fire", "smoke") else "normal",
    )


def _accepts(kinds: set[str]) -> Callable[[Notification], bool]:
    return lambda n: n.kind in kinds


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as r:
        yield r


def _dispatcher(
    db: MetadataDB,
    receiver: HttpReceiver,
    kinds: set[str],
    clock: Callable[[], float] = time.time,
    **kw: object,
) -> Dispatcher:
    notifier = WebhookNotifier("ops", receiver.url + "/hook", secret=SECRET)
    return Dispatcher(
        db,
        _router(),
        [Channel(notifier, _accepts(kinds))],
        retry=FAST,
        clock=clock,
        **kw,  # type: ignore[arg-type]
    )


def _keys(receiver: HttpReceiver) -> Counter[str]:
    return Counter(r.headers["x-gridwatch-delivery"] for r in receiver.accepted)


def test_alerts_of_one_fire_on_two_cameras_are_one_incident_with_one_notification(
    db: MetadataDB, receiver: HttpReceiver
) -> None:
    d = _dispatcher(db, receiver, {"new"})
    smoke = _alert(db, "cam-a", "smoke", T0)
    fire = _alert(db, "cam-b", "fire", T0 + timedelta(seconds=40))
    other_grid = _alert(db, "cam-c", "fire", T0 + timedelta(seconds=50), grid="g2")
    person = _alert(db, "cam-a", "person", T0 + timedelta(seconds=60))
    for m in (smoke, fire, other_grid, person):
        d.handle(m)
    d.close()
    incidents = {i.first_alert_id: i for i in db.list_incidents()}
    assert len(incidents) == 3  # the fire of g1 (two cameras), the fire of g2, the person
    g1 = incidents[smoke.alert_id]
    assert (g1.category, g1.alert_count, g1.cameras, g1.severity) == (
        "fire",
        2,
        ("cam-a", "cam-b"),
        "critical",
    )
    assert sorted(db.list_incident_alert_ids(g1.id)) == sorted([smoke.alert_id, fire.alert_id])
    assert db.get_alert(fire.alert_id).incident_id == g1.id  # type: ignore[union-attr]
    assert len(receiver.accepted) == 3  # one notification per incident
    bodies = [r.json() for r in receiver.accepted]
    assert {b["incident_id"] for b in bodies} == set(i.id for i in incidents.values())
    for r in receiver.accepted:  # signed
        ts, sig = r.headers["x-gridwatch-timestamp"], r.headers["x-gridwatch-signature"]
        assert verify_signature(SECRET, ts, r.body, sig)
    assert bodies[0]["team"] == "east" and bodies[0]["severity"] == "critical"


def test_the_incident_an_alert_joins_is_announced_and_ignored_when_it_comes_back(
    db: MetadataDB, receiver: HttpReceiver
) -> None:
    """The live feed learns each alert's incident at once: the dispatcher publishes `kind: incident` for the
    alert; handling that entry (it reaches the dispatcher too) notifies nobody."""
    published: list[BusMessage] = []
    d = _dispatcher(db, receiver, {"new", "update", "resolved"}, publish=published.append)
    smoke = _alert(db, "cam-a", "smoke", T0)
    fire = _alert(db, "cam-b", "fire", T0 + timedelta(seconds=40))
    d.handle(smoke)
    d.handle(fire)
    incident = db.list_incidents()[0]
    assert [(m.kind, m.alert_id, m.incident_id, m.status, m.grid) for m in published] == [
        ("incident", smoke.alert_id, incident.id, "new", "g1"),
        ("incident", fire.alert_id, incident.id, "new", "g1"),
    ]
    sent = len(receiver.accepted)
    for m in published:
        d.handle(m)
    d.close()
    assert len(receiver.accepted) == sent


def test_an_alert_after_the_window_opens_a_new_incident(db: MetadataDB, receiver: HttpReceiver) -> None:
    d = _dispatcher(db, receiver, {"new"})
    first = _alert(db, "cam-a", "person", T0)
    later = _alert(db, "cam-a", "person", T0 + timedelta(seconds=301))  # person window: 300 s
    d.handle(first)
    d.handle(later)
    d.close()
    assert len(db.list_incidents()) == 2 and len(receiver.accepted) == 2


def test_a_redelivered_entry_notifies_nobody_twice(db: MetadataDB, receiver: HttpReceiver) -> None:
    d = _dispatcher(db, receiver, {"new", "update"})
    first = _alert(db, "cam-a", "fire", T0)
    second = _alert(db, "cam-b", "fire", T0 + timedelta(seconds=5))
    for m in (first, second, first, second, first):  # redelivered after a crash, reclaimed...
        d.handle(m)
    d.close()
    assert len(db.list_incidents()) == 1
    assert db.list_incidents()[0].alert_count == 2
    assert sorted(_keys(receiver).values()) == [1, 1]  # a "new" and an "update", once each
    assert d.stats.skipped_duplicates == 3


def test_a_notifier_answering_500_then_429_is_retried_and_delivers_once(
    db: MetadataDB, receiver: HttpReceiver
) -> None:
    receiver.script(Reply(500), Reply(429, headers={"Retry-After": "0"}))
    d = _dispatcher(db, receiver, {"new"})
    m = _alert(db, "cam-a", "fire", T0)
    d.handle(m)
    d.handle(m)
    d.close()
    assert len(receiver.requests) == 3
    assert len(receiver.accepted) == 1
    [delivery] = db.list_deliveries(m.alert_id)
    assert (delivery.status, delivery.attempts, delivery.kind) == ("sent", 3, "new")


def test_a_receiver_down_longer_than_the_retries_keeps_the_entry_pending_until_it_is_back(
    db: MetadataDB, receiver: HttpReceiver
) -> None:
    receiver.script(*[Reply(503)] * FAST.max_attempts)
    now = [T0.timestamp() + 60]
    d = _dispatcher(db, receiver, {"new"}, clock=lambda: now[0])
    m = _alert(db, "cam-a", "fire", T0)
    with pytest.raises(DeliveryPending):
        d.handle(m)
    [row] = db.list_deliveries(m.alert_id)
    assert (row.status, row.attempts) == ("retrying", FAST.max_attempts)
    d.handle(m)  # taken over later, the receiver answers again
    [row] = db.list_deliveries(m.alert_id)
    assert (row.status, row.attempts) == ("sent", FAST.max_attempts + 1)
    assert len(receiver.accepted) == 1
    # an hour on, a receiver still down is given up: the failure is recorded and the entry acked
    late = _alert(db, "cam-c", "person", T0)
    receiver.script(*[Reply(503)] * FAST.max_attempts)
    now[0] = T0.timestamp() + 3601
    d.handle(late)
    d.close()
    assert [r.status for r in db.list_deliveries(late.alert_id)] == ["failed"]


def test_a_notifier_answering_400_is_not_retried_and_the_failure_is_logged(
    db: MetadataDB, receiver: HttpReceiver
) -> None:
    receiver.script(Reply(400))
    d = _dispatcher(db, receiver, {"new"})
    m = _alert(db, "cam-a", "fire", T0)
    d.handle(m)
    d.close()
    [delivery] = db.list_deliveries(m.alert_id)
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert "400" in (delivery.last_error or "")
    assert len(receiver.requests) == 1


def test_escalation_goes_to_the_fallback_team_and_the_centre_after_the_timeout(
    db: MetadataDB, receiver: HttpReceiver
) -> None:
    now = [T0.timestamp()]
    d = _dispatcher(db, receiver, {"new", "escalation"}, clock=lambda: now[0], escalate_after_s=300)
    ignored = _alert(db, "cam-a", "fire", T0)
    answered = _alert(db, "cam-c", "person", T0)
    d.handle(ignored)
    d.handle(answered)
    answered_incident = db.get_alert(answered.alert_id).incident_id  # type: ignore[union-attr]
    assert answered_incident is not None
    assert db.set_incident_status(
        answered_incident, expected="new", status=next_status("new", "acknowledge"), user_id=None
    )
    now[0] += 299
    assert d.escalate_due() == 0
    now[0] += 2
    assert d.escalate_due() == 1
    assert d.escalate_due() == 0  # once
    d.close()
    escalations = [r.json() for r in receiver.accepted if r.json()["kind"] == "escalation"]
    assert sorted(e["team"] for e in escalations) == ["centre", "joint"]
    assert {e["alert_id"] for e in escalations} == {ignored.alert_id}
    incident = db.get_incident(escalations[0]["incident_id"])
    assert incident is not None and incident.escalation_level == 1
    assert [a.action for a in db.list_incident_actions(incident.id)] == ["escalated"]
    assert "NOT ACKNOWLEDGED" in escalations[0]["title"]


def test_lifecycle_steps_are_recorded_with_who_and_when_and_give_response_times(db: MetadataDB) -> None:
    from storage.metadata import UserRecord

    db.upsert_users([UserRecord(id="li", name="Li", role="patrol", team_id=None, password_hash=None)])
    m = _alert(db, "cam-a", "fire", T0)
    joined = db.attach_alert_to_incident(
        alert_id=m.alert_id, camera_id="cam-a", village="v1", grid="g1", group="fire", label="fire",
        severity="critical", at=T0, window_s=1800, team="east",
    )  # fmt: skip
    incident = joined.incident
    steps = [("acknowledge", 45), ("dispatch", 60), ("on_scene", 600), ("resolve", 1200)]
    status = "new"
    for action, after in steps:
        target = next_status(status, action)
        done = db.set_incident_status(
            incident.id,
            expected=status,
            status=target,
            user_id="li",
            note=action,
            at=T0 + timedelta(seconds=after),
        )
        assert done is not None
        status = target
    # a step from a status that is no longer current is refused (two operators at once)
    assert db.set_incident_status(incident.id, expected="new", status="acknowledged", user_id="li") is None
    actions = db.list_incident_actions(incident.id)
    assert [(a.action, a.user_id) for a in actions] == [
        ("acknowledged", "li"),
        ("dispatched", "li"),
        ("on_scene", "li"),
        ("resolved", "li"),
    ]
    [times] = db.response_times(since=T0 - timedelta(days=1))
    assert (times.grid, times.incidents, times.median_ack_s, times.median_on_scene_s) == (
        "g1",
        1,
        45.0,
        600.0,
    )


def test_one_hundred_detections_in_ten_seconds_give_one_notification_per_camera_and_label(
    db: MetadataDB, receiver: HttpReceiver
) -> None:
    """100 person detections (new tracks each time) on two cameras over 10 s, cooldown 30 s."""
    engine = RuleEngine(
        [Rule("people", frozenset({"person"}), 0.5, cooldown_s=30, min_hits=1, moving_only=False)]
    )
    d = _dispatcher(db, receiver, {"new", "update"})
    start = T0.timestamp()
    for i in range(100):
        t = start + i * 0.1
        camera = "cam-a" if i % 2 else "cam-b"
        track = Track(i, "person", (10, 10, 60, 120), 0.9, t, t, hits=1, stationary=False, moved=True)
        for trigger in engine.evaluate(camera, [track], (640, 480), now=t):
            d.handle(_alert(db, trigger.camera_id, trigger.label, datetime.fromtimestamp(t, UTC)))
    d.close()
    bodies = [r.json() for r in receiver.accepted]
    assert sorted(b["camera_id"] for b in bodies) == ["cam-a", "cam-b"]  # one per camera and label
    assert [b["kind"] for b in bodies].count("new") == 1  # and one incident: the second is its update


# -- with the real stream ------------------------------------------------------------------------------------


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    yield server
    server.stop()


def test_redis_killed_during_a_burst_loses_no_alert_and_delivers_each_once(
    db: MetadataDB, receiver: HttpReceiver, aof_redis: RedisServer, tmp_path: Path, until: Callable[..., Any]
) -> None:
    bus = AlertBus.from_url(aof_redis.url)
    outbox = OutboxPublisher(bus, tmp_path / "outbox.db", timeout_s=0.3, retry_max_s=0.5)
    dispatcher = _dispatcher(db, receiver, {"new", "update"}, lock=redis_lock(bus.client))
    loop = DispatchLoop(
        StreamConsumer(AlertBus.from_url(aof_redis.url), "dispatchers", retry_max_s=0.5),
        dispatcher,
        reclaim_idle_s=2,
        reclaim_every_s=0.5,
    )
    loop.start()
    messages = []
    for i in range(60):
        at = T0 + timedelta(seconds=i)
        messages.append(_alert(db, f"cam-{i % 3}", "fire" if i % 2 else "person", at, grid=f"g{1 + i % 2}"))
    killed = threading.Event()

    def burst() -> None:
        for i, m in enumerate(messages):
            outbox.publish(m)
            if i == 25:
                aof_redis.kill()
                killed.set()
            time.sleep(0.01)

    sender = threading.Thread(target=burst)
    sender.start()
    killed.wait(10)
    time.sleep(0.5)
    aof_redis.start()  # same data dir and port: the AOF brings back the stream and the group
    sender.join(30)
    try:
        until("every alert to be delivered", lambda: len(_keys(receiver)) >= len(messages), 60)
        time.sleep(1.0)  # anything delivered twice would show now
    finally:
        loop.stop()
        outbox.close()
        dispatcher.close()
        bus.close()
    delivered = {r.json()["alert_id"] for r in receiver.accepted}
    assert delivered == {m.alert_id for m in messages}
    keys = _keys(receiver)
    assert max(keys.values()) == 1, [k for k, n in keys.items() if n > 1]
    assert sum(i.alert_count for i in db.list_incidents(limit=1000)) == len(messages)


def test_a_dispatcher_that_dies_before_acking_is_taken_over_and_delivers_once(
    db: MetadataDB, receiver: HttpReceiver, aof_redis: RedisServer, until: Callable[..., Any]
) -> None:
    bus = AlertBus.from_url(aof_redis.url)
    group = "dispatchers"
    bus.ensure_group(group)
    messages = [
        _alert(db, "cam-a", "fire", T0 + timedelta(seconds=i), grid=f"g{1 + i % 2}") for i in range(6)
    ]
    for m in messages:
        bus.publish(m)
    # A dispatcher read the entries, delivered the first half, and died before acking any of them.
    dead = StreamConsumer(bus, group, "dead-dispatcher")
    taken = dead.read(10, block_ms=100)
    assert len(taken) == 6
    crashed = _dispatcher(db, receiver, {"new", "update"})
    for _, m in taken[:3]:
        crashed.handle(m)
    crashed.close()
    assert len(_keys(receiver)) == 3
    dispatcher = _dispatcher(db, receiver, {"new", "update"})
    loop = DispatchLoop(
        StreamConsumer(bus, group, "survivor"), dispatcher, reclaim_idle_s=0.5, reclaim_every_s=0.2
    )
    time.sleep(0.6)
    loop.start()
    try:
        until("the other three deliveries", lambda: len(_keys(receiver)) == 6, 20)
        until("every entry acked", lambda: StreamConsumer(bus, group, "x").pending().count == 0, 10)
    finally:
        loop.stop()
        dispatcher.close()
    assert max(_keys(receiver).values()) == 1
    assert loop.reclaimed == 6 and dispatcher.stats.skipped_duplicates == 3
    bus.close()


def test_the_redis_lock_serialises_incident_creation_across_dispatchers(
    db: MetadataDB, receiver: HttpReceiver, aof_redis: RedisServer
) -> None:
    client = redis.Redis.from_url(aof_redis.url)
    ds = [_dispatcher(db, receiver, {"new", "update"}, lock=redis_lock(client)) for _ in range(4)]
    messages = [_alert(db, f"cam-{i}", "smoke", T0 + timedelta(seconds=i)) for i in range(8)]
    threads = [
        threading.Thread(target=lambda d=d, ms=messages[i::4]: [d.handle(m) for m in ms])
        for i, d in enumerate(ds)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for d in ds:
        d.close()
    incidents = db.list_incidents()
    assert len(incidents) == 1 and incidents[0].alert_count == 8
    assert [r.json()["kind"] for r in receiver.accepted].count("new") == 1
    client.close()


def test_a_dispatcher_process_killed_mid_delivery_is_taken_over_and_the_entry_delivered_once(
    receiver: HttpReceiver, aof_redis: RedisServer, tmp_path: Path, until: Callable[..., Any]
) -> None:
    """A real `gridwatch dispatcher` process is killed (SIGKILL) while a webhook delivery hangs; another
    dispatcher takes the entry over and delivers it; the database holds one delivery, sent."""
    import signal
    import subprocess
    import sys

    import yaml

    db_url = f"sqlite:///{tmp_path / 'gw.db'}"
    config = {
        "data_dir": str(tmp_path / "data"),
        "redis": {"url": aof_redis.url},
        "database": {"url": db_url},
        "villages": [{"id": "v1", "name": "V1"}],
        "teams": [{"id": "east", "name": "East", "members": ["li"]}],
        "grids": [{"id": "g1", "name": "G1", "village": "v1", "team": "east"}],
        "notifiers": [{"type": "webhook", "name": "ops", "url": receiver.url + "/hook", "timeout_s": 30}],
    }
    path = tmp_path / "dispatcher.yaml"
    path.write_text(yaml.safe_dump(config))
    db = MetadataDB(db_url)
    db.create_schema()
    bus = AlertBus.from_url(aof_redis.url)
    receiver.script(Reply(200, delay_s=8))  # the first delivery hangs: the process dies in it
    gridwatch = Path(sys.executable).with_name("gridwatch")
    proc = subprocess.Popen(
        [str(gridwatch), "dispatcher", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    survivor: DispatchLoop | None = None
    try:
        m = _alert(db, "cam-a", "fire", T0)
        bus.publish(m)
        until("the dispatcher process to start delivering", lambda: len(receiver.requests) == 1, 30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert db.list_deliveries(m.alert_id) == []  # it died before recording anything
        dispatcher = _dispatcher(db, receiver, {"new"})
        survivor = DispatchLoop(
            StreamConsumer(bus, "dispatchers", "survivor"), dispatcher, reclaim_idle_s=1, reclaim_every_s=0.2
        )
        survivor.start()
        until("the delivery", lambda: [d.status for d in db.list_deliveries(m.alert_id)] == ["sent"], 20)
        until("the entry acked", lambda: StreamConsumer(bus, "dispatchers", "x").pending().count == 0, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
        if survivor is not None:
            survivor.stop()
            survivor.dispatcher.close()
        bus.close()
    assert survivor.reclaimed == 1
    # the receiver saw the hung attempt and the delivery, under one delivery key: it can drop the repeat
    assert len({r.headers["x-gridwatch-delivery"] for r in receiver.requests}) == 1
    [incident] = db.list_incidents()
    assert incident.alert_count == 1  # the dead process's incident was reused, not opened twice
    db.close()
