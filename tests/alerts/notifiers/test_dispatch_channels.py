"""The real `Dispatcher` (incidents in a MetadataDB on SQLite and PostgreSQL, routing with rosters) through
each channel's real or faithful receiver: Web Push via web-push-testing (decrypted), MQTT via Mosquitto,
WeCom and DingTalk robots via local fakes that check keys and signatures; team filters from the config."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import queue
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from alerts.bus import BusMessage
from alerts.dispatcher import Channel, Dispatcher
from alerts.notifiers.mqtt import MqttNotifier
from alerts.notifiers.retry import RetryPolicy
from alerts.notifiers.settings import build_notifier, parse_notifier_settings
from alerts.notifiers.testing import (
    HttpReceiver,
    MosquittoServer,
    MqttMessage,
    MqttSubscriber,
    ReceivedRequest,
    Reply,
    WebPushTestingServer,
)
from alerts.notifiers.webpush import VapidKeys, WebPushNotifier
from alerts.routing import Router, Shift, Team
from alerts.schedule import Schedule, TimeWindow, all_week, parse_clock
from storage.metadata import AlertRecord, CameraRecord, MetadataDB

TZ = "Asia/Shanghai"
LOCAL_DAY = datetime.fromisoformat("2026-12-01T10:30:00+08:00")  # a Tuesday morning in the county
LOCAL_NIGHT = datetime.fromisoformat("2026-12-01T23:10:00+08:00")
FAST = RetryPolicy(max_attempts=3, base_s=0.05, max_s=0.2)
SUBJECT = "mailto:ops@gridwatch.example"
WECOM_KEY = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
DING_TOKEN = "d1ngt0ken4west0a9b8c7"
DING_SECRET = "SECf00dfeed0123456789abcdef0123456789abcdef0123456789abcdef01234"
CENTRE_KEY = "c3ntre00-1111-2222-3333-444455556666"
Subscribe = Callable[[int, list[str]], MqttSubscriber]


def _schedule(name: str, start: str, end: str) -> Schedule:
    window = TimeWindow(all_week(None), parse_clock(start), parse_clock(end))
    return Schedule(name, (window,), timezone=TZ)


def _router() -> Router:
    day, night = _schedule("day", "08:00", "20:00"), _schedule("night", "20:00", "08:00")
    teams = [
        Team("east", "East patrol", ("li", "wang"), roster=(Shift("li", day), Shift("wang", night))),
        Team("west", "West patrol", ("zhao",)),
        Team("joint", "Joint emergency team", ("chen",)),
        Team("centre", "Monitoring centre", ("op1",)),
    ]
    return Router(
        teams, {"g-east": "east", "g-west": "west"}, fallback_team="joint", monitoring_centre="centre"
    )


def _camera(db: MetadataDB, camera: str, name: str, grid: str) -> None:
    db.upsert_cameras(
        [CameraRecord(camera, name, "dongcun", grid, f"rtsp://admin:***@10.0.0.1/{camera}", 2.0)]
    )


def _alert(db: MetadataDB, camera: str, label: str, at: datetime, grid: str) -> BusMessage:
    severity = "critical" if label in ("fire", "smoke") else "normal"
    alert_id = uuid.uuid4().hex
    at = at.astimezone(UTC)
    db.add_alert(
        AlertRecord(
            id=alert_id, camera_id=camera, village="dongcun", grid=grid, label=label, score=0.91,
            bbox=(0.1, 0.2, 0.3, 0.4), created_at=at, frame_time=at, severity=severity,
        )
    )  # fmt: skip
    return BusMessage(
        alert_id=alert_id, kind="alert", camera_id=camera, village="dongcun", grid=grid, label=label,
        score=0.91, created_at=at.isoformat(), severity=severity,
    )  # fmt: skip


def _incident_of(db: MetadataDB, alert_id: str) -> str:
    alert = db.get_alert(alert_id)
    assert alert is not None and alert.incident_id is not None
    return alert.incident_id


# -- Web Push -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vapid() -> VapidKeys:
    return VapidKeys.generate()


def _push_dispatcher(db: MetadataDB, vapid: VapidKeys, **kw: Any) -> Dispatcher:
    phones = WebPushNotifier("phones", vapid, SUBJECT, ttl_s=600, timeout_s=5)
    return Dispatcher(db, _router(), [Channel(phones)], retry=FAST, timezone=TZ, **kw)


def _phone(db: MetadataDB, server: WebPushTestingServer, vapid: VapidKeys, user: str) -> dict[str, Any]:
    """A browser of `user` subscribes (at the push service) and the API stores the subscription."""
    subscription = server.subscribe(vapid.application_server_key)
    stored = {"endpoint": subscription["endpoint"], "keys": subscription["keys"]}
    db.add_push_subscription(user, json.dumps(stored))
    return subscription


def _pushes(server: WebPushTestingServer, subscription: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(m) for m in server.notifications(subscription["clientHash"])]


@pytest.mark.parametrize(
    ("local_time", "on_duty", "off_duty"),
    [(LOCAL_DAY, "li", "wang"), (LOCAL_NIGHT, "wang", "li")],
    ids=["day-shift", "night-shift"],
)
def test_push_reaches_only_the_grid_team_member_on_duty(
    db: MetadataDB,
    webpush_server: WebPushTestingServer,
    vapid: VapidKeys,
    local_time: datetime,
    on_duty: str,
    off_duty: str,
) -> None:
    _camera(db, "cam-gate", "East gate", "g-east")
    phones = {user: _phone(db, webpush_server, vapid, user) for user in ("li", "wang", "zhao")}
    d = _push_dispatcher(db, vapid, public_url="https://gw.example")
    fire = _alert(db, "cam-gate", "fire", local_time, grid="g-east")
    d.handle(fire)
    d.handle(fire)  # redelivered bus entry: nobody is pushed twice
    d.close()

    [push] = _pushes(webpush_server, phones[on_duty])
    incident_id = _incident_of(db, fire.alert_id)
    assert (push["title"], push["severity"], push["kind"]) == ("FIRE at East gate", "critical", "new")
    assert (push["incident_id"], push["alert_id"]) == (incident_id, fire.alert_id)
    assert push["camera_name"] == "East gate" and push["label"] == "fire"
    assert push["url"] == f"https://gw.example/#/alerts/{fire.alert_id}"
    assert incident_id in push["body"] and "grid g-east" in push["body"]
    assert _pushes(webpush_server, phones[off_duty]) == []  # same team, not on the roster now
    assert _pushes(webpush_server, phones["zhao"]) == []  # another team
    [delivery] = db.list_deliveries(fire.alert_id)
    assert (delivery.channel, delivery.status, delivery.kind) == ("webpush", "sent", "new")
    assert d.stats.skipped_duplicates == 1


def test_an_expired_subscription_ends_gone_and_is_deleted(
    db: MetadataDB, webpush_server: WebPushTestingServer, vapid: VapidKeys
) -> None:
    phone = _phone(db, webpush_server, vapid, "li")
    old_tablet = _phone(db, webpush_server, vapid, "li")
    webpush_server.expire(old_tablet["clientHash"])  # the browser unsubscribed; the service answers 410
    d = _push_dispatcher(db, vapid)
    first = _alert(db, "cam-gate", "smoke", LOCAL_DAY, grid="g-east")
    d.handle(first)
    deliveries = {r.status: r for r in db.list_deliveries(first.alert_id)}
    assert sorted(deliveries) == ["gone", "sent"]
    assert (deliveries["gone"].attempts, deliveries["gone"].channel) == (1, "webpush")  # not retried
    assert "410" in (deliveries["gone"].last_error or "")
    [left] = db.list_push_subscriptions(user_ids=["li"])
    assert left.endpoint == phone["endpoint"]

    second = _alert(db, "cam-road", "fire", LOCAL_DAY + timedelta(seconds=20), grid="g-east")
    d.handle(second)  # joins the incident: an update, to the phone only
    d.close()
    assert [r.status for r in db.list_deliveries(second.alert_id)] == ["sent"]
    assert [p["kind"] for p in _pushes(webpush_server, phone)] == ["new", "update"]
    assert {p["incident_id"] for p in _pushes(webpush_server, phone)} == {_incident_of(db, first.alert_id)}
    assert _pushes(webpush_server, old_tablet) == []


# -- MQTT ---------------------------------------------------------------------------------------------------


def _collect(subscriber: MqttSubscriber, count: int, timeout: float = 10.0) -> list[MqttMessage]:
    out: list[MqttMessage] = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{len(out)} of {count} MQTT messages within {timeout}s: {out}")
        try:
            out.append(subscriber.messages.get(timeout=remaining))
        except queue.Empty:
            continue
    return out


def test_mqtt_gets_each_notification_on_the_alert_and_incident_topics_at_qos_1(
    db: MetadataDB, mosquitto: MosquittoServer, mqtt_subscriber: Subscribe
) -> None:
    prefix = f"gw-dispatch-{uuid.uuid4().hex[:8]}"
    broker = MqttNotifier("broker", mosquitto.host, mosquitto.port, prefix, publish_timeout_s=5)
    assert broker.wait_connected(10)
    subscriber = mqtt_subscriber(mosquitto.port, [f"{prefix}/alerts/g-east/#", f"{prefix}/incidents/#"])
    other_grid = mqtt_subscriber(mosquitto.port, [f"{prefix}/alerts/g-west/#"])
    d = Dispatcher(db, _router(), [Channel(broker)], retry=FAST, timezone=TZ)
    _camera(db, "cam-gate", "East gate", "g-east")
    fire = _alert(db, "cam-gate", "fire", LOCAL_DAY, grid="g-east")
    smoke = _alert(db, "cam-gate", "smoke", LOCAL_DAY + timedelta(seconds=30), grid="g-east")
    d.handle(fire)
    d.handle(smoke)
    d.close()  # closes the notifier too

    messages = _collect(subscriber, 4)
    incident_id = _incident_of(db, fire.alert_id)
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for m in messages:
        assert (m.qos, m.retain) == (1, False), m
        by_topic.setdefault(m.topic, []).append(m.json())
    assert sorted(by_topic) == [
        f"{prefix}/alerts/g-east/fire",
        f"{prefix}/alerts/g-east/smoke",
        f"{prefix}/incidents/{incident_id}",
    ]
    [new] = by_topic[f"{prefix}/alerts/g-east/fire"]
    assert (new["kind"], new["alert_id"], new["incident_id"]) == ("new", fire.alert_id, incident_id)
    assert (new["team"], new["severity"], new["camera_name"]) == ("east", "critical", "East gate")
    [update] = by_topic[f"{prefix}/alerts/g-east/smoke"]
    assert (update["kind"], update["alert_id"]) == ("update", smoke.alert_id)
    assert [n["dedupe_key"] for n in by_topic[f"{prefix}/incidents/{incident_id}"]] == [
        new["dedupe_key"],
        update["dedupe_key"],
    ]
    assert other_grid.messages.empty()
    assert [r.status for r in db.list_deliveries(fire.alert_id)] == ["sent"]


# -- group robots with team filters -------------------------------------------------------------------------


def _fake_wecom(key: str) -> Callable[[ReceivedRequest], Reply]:
    def answer(request: ReceivedRequest) -> Reply:
        if request.path != "/cgi-bin/webhook/send" or request.param("key") != key:
            return Reply(200, body={"errcode": 93000, "errmsg": "invalid webhook url"})
        body = request.json()
        if body.get("msgtype") != "markdown" or not body.get("markdown", {}).get("content"):
            return Reply(200, body={"errcode": 40058, "errmsg": "bad markdown"})
        return Reply(200, body={"errcode": 0, "errmsg": "ok"})

    return answer


def _fake_dingtalk(request: ReceivedRequest) -> Reply:
    if request.path != "/robot/send" or request.param("access_token") != DING_TOKEN:
        return Reply(200, body={"errcode": 300001, "errmsg": "token is not exist"})
    timestamp, sign = request.param("timestamp") or "", request.param("sign") or ""
    digest = hmac.new(DING_SECRET.encode(), f"{timestamp}\n{DING_SECRET}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(sign, base64.b64encode(digest).decode()):
        return Reply(200, body={"errcode": 310000, "errmsg": "sign not match"})
    if request.json().get("msgtype") != "markdown":
        return Reply(200, body={"errcode": 40035, "errmsg": "missing parameter"})
    return Reply(200, body={"errcode": 0, "errmsg": "ok"})


@pytest.fixture
def robots() -> Iterator[dict[str, HttpReceiver]]:
    servers = {
        "east": HttpReceiver(_fake_wecom(WECOM_KEY)),
        "west": HttpReceiver(_fake_dingtalk),
        "centre": HttpReceiver(_fake_wecom(CENTRE_KEY)),
    }
    for server in servers.values():
        server.__enter__()
    yield servers
    for server in servers.values():
        server.__exit__(None, None, None)


def _robot_channels(robots: dict[str, HttpReceiver]) -> list[Channel]:
    """As `gridwatch.dispatch.build_dispatcher` makes them: from config sections, `accepts` as filter."""
    sections = [
        {"type": "wecom", "name": "east-group", "teams": ["east"],
         "url": f"{robots['east'].url}/cgi-bin/webhook/send?key={WECOM_KEY}"},
        {"type": "dingtalk", "name": "west-group", "teams": ["west"], "secret": DING_SECRET,
         "url": f"{robots['west'].url}/robot/send?access_token={DING_TOKEN}"},
        {"type": "wecom", "name": "centre-duty", "teams": ["centre"], "kinds": ["escalation"],
         "url": f"{robots['centre'].url}/cgi-bin/webhook/send?key={CENTRE_KEY}"},
    ]  # fmt: skip
    settings = [parse_notifier_settings(section) for section in sections]
    return [Channel(build_notifier(s), s.accepts) for s in settings]


def _texts(server: HttpReceiver) -> list[str]:
    texts = []
    for request in server.accepted:
        body = request.json()["markdown"]
        texts.append(body.get("content") or body["text"])
    return texts


def test_each_grid_alert_reaches_only_its_team_robot_and_escalations_the_centre(
    db: MetadataDB, robots: dict[str, HttpReceiver]
) -> None:
    now = [LOCAL_DAY.timestamp()]
    d = Dispatcher(
        db, _router(), _robot_channels(robots), retry=FAST, timezone=TZ, escalate_after_s=300,
        clock=lambda: now[0],
    )  # fmt: skip
    _camera(db, "cam-gate", "East gate", "g-east")
    _camera(db, "cam-market", "West market", "g-west")
    fire = _alert(db, "cam-gate", "fire", LOCAL_DAY, grid="g-east")
    person = _alert(db, "cam-market", "person", LOCAL_DAY + timedelta(seconds=5), grid="g-west")
    d.handle(fire)
    d.handle(person)

    [east] = _texts(robots["east"])
    assert "[CRITICAL] New alert: FIRE at East gate" in east and "dongcun / g-east" in east
    [west] = _texts(robots["west"])
    assert "Person at West market" in west and "dongcun / g-west" in west
    assert robots["centre"].requests == []  # no escalation yet, and not the centre's team
    assert len(robots["east"].requests) == 1 and len(robots["west"].requests) == 1  # none refused

    now[0] += 306  # nobody acknowledged either incident within 300 s
    assert d.escalate_due() == 2
    d.close()
    escalations = _texts(robots["centre"])
    assert len(escalations) == 2 and all("NOT ACKNOWLEDGED" in t for t in escalations)
    assert sorted(g for t in escalations for g in ("g-east", "g-west") if f"/ {g}" in t) == [
        "g-east",
        "g-west",
    ]
    assert all("Team: centre" in t for t in escalations)
    assert (
        len(robots["east"].accepted) == 1 and len(robots["west"].accepted) == 1
    )  # escalations went elsewhere
    assert {r.channel for r in db.list_deliveries(fire.alert_id)} == {"wecom"}
