"""Web Push through the real `web-push-testing` push service: VAPID, encryption, expiry; and VAPID keys."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from alerts.notifiers.base import Notification, PermanentDeliveryError
from alerts.notifiers.retry import RetryPolicy, deliver
from alerts.notifiers.testing import WebPushTestingServer, free_port
from alerts.notifiers.webpush import PAYLOAD_FIELDS, VapidKeys, WebPushNotifier, incident_topic, push_payload

SUBJECT = "mailto:ops@gridwatch.example"


@pytest.fixture(scope="module")
def vapid() -> VapidKeys:
    return VapidKeys.generate()


@pytest.fixture
def notifier(vapid: VapidKeys) -> Iterator[WebPushNotifier]:
    with WebPushNotifier("phones", vapid, SUBJECT, ttl_s=600, timeout_s=5) as notifier:
        yield notifier


def test_push_is_decrypted_by_the_push_service(
    webpush_server: WebPushTestingServer,
    notifier: WebPushNotifier,
    vapid: VapidKeys,
    make_notification: Callable[..., Notification],
) -> None:
    subscription = webpush_server.subscribe(vapid.application_server_key)
    notification = make_notification()
    target = json.dumps({"endpoint": subscription["endpoint"], "keys": subscription["keys"]})
    result = deliver(notifier, notification, target, sleep=lambda _s: None)
    assert (result.status, result.attempts) == ("delivered", 1)
    [received] = webpush_server.notifications(subscription["clientHash"])
    payload = json.loads(received)
    assert payload == {name: getattr(notification, name) for name in PAYLOAD_FIELDS}
    assert payload["title"] == "Fire at East gate" and payload["camera_name"] == "东村口 East gate"
    assert received.encode() == push_payload(notification)


def test_two_pushes_arrive_in_order(
    webpush_server: WebPushTestingServer,
    notifier: WebPushNotifier,
    vapid: VapidKeys,
    make_notification: Callable[..., Notification],
) -> None:
    subscription = webpush_server.subscribe(vapid.application_server_key)
    first, second = make_notification(severity="low"), make_notification(kind="resolved")
    for notification in (first, second):
        notifier.send(notification, json.dumps(subscription))  # extra fields (clientHash) are ignored
    received = [json.loads(m)["dedupe_key"] for m in webpush_server.notifications(subscription["clientHash"])]
    assert received == [first.dedupe_key, second.dedupe_key]


def test_expired_subscription_is_gone(
    webpush_server: WebPushTestingServer,
    notifier: WebPushNotifier,
    vapid: VapidKeys,
    make_notification: Callable[..., Notification],
) -> None:
    subscription = webpush_server.subscribe(vapid.application_server_key)
    webpush_server.expire(subscription["clientHash"])
    with pytest.raises(PermanentDeliveryError) as error:
        notifier.send(make_notification(), json.dumps(subscription))
    assert error.value.gone and error.value.status == 410
    result = deliver(notifier, make_notification(), json.dumps(subscription), sleep=lambda _s: None)
    assert (result.status, result.attempts, result.http_status) == ("gone", 1, 410)
    assert webpush_server.notifications(subscription["clientHash"]) == []


def test_wrong_vapid_key_is_rejected_but_not_gone(
    webpush_server: WebPushTestingServer,
    notifier: WebPushNotifier,
    make_notification: Callable[..., Notification],
) -> None:
    subscription = webpush_server.subscribe(
        VapidKeys.generate().application_server_key
    )  # another server's key
    result = deliver(notifier, make_notification(), json.dumps(subscription), sleep=lambda _s: None)
    assert (result.status, result.attempts, result.http_status) == ("failed", 1, 400)


def test_unusable_targets_are_permanent(
    notifier: WebPushNotifier, make_notification: Callable[..., Notification]
) -> None:
    for target in (None, "not json", '{"endpoint": "https://x/y"}', '{"endpoint": "ftp://x", "keys": {}}'):
        with pytest.raises(PermanentDeliveryError) as error:
            notifier.send(make_notification(), target)
        assert not error.value.gone


def test_unreachable_push_service_is_retryable(
    notifier: WebPushNotifier,
    vapid: VapidKeys,
    webpush_server: WebPushTestingServer,
    make_notification: Callable[..., Notification],
) -> None:
    subscription = webpush_server.subscribe(vapid.application_server_key)
    subscription["endpoint"] = f"http://127.0.0.1:{free_port()}/notify/{subscription['clientHash']}"
    waits: list[float] = []
    result = deliver(
        notifier, make_notification(), json.dumps(subscription), RetryPolicy(3, jitter=0), waits.append
    )
    assert (result.status, result.attempts, waits) == ("failed", 3, [0.5, 1.0])


def test_large_body_is_cut_to_fit(make_notification: Callable[..., Notification]) -> None:
    payload = push_payload(make_notification(body="火" * 5000))
    assert len(payload) <= 3000
    assert json.loads(payload)["body"].endswith("…")


def test_vapid_keys_round_trip(tmp_path: Path, vapid: VapidKeys) -> None:
    public = vapid.application_server_key
    assert len(public) == 87 and "=" not in public  # 65 bytes, URL-safe base64 without padding
    assert VapidKeys.from_pem(vapid.private_pem()).application_server_key == public
    assert VapidKeys.load(vapid.private_pem().decode()).application_server_key == public
    assert VapidKeys.from_base64(vapid.private_base64()).application_server_key == public
    assert VapidKeys.load(vapid.private_base64()).application_server_key == public
    path = tmp_path / "vapid.pem"
    vapid.save(path)
    assert path.stat().st_mode & 0o077 == 0
    assert VapidKeys.from_file(path).application_server_key == public
    assert vapid.private_base64() not in repr(vapid) and "PRIVATE" not in repr(vapid)
    assert VapidKeys.generate().application_server_key != public


def test_topic_header_is_valid() -> None:
    topic = incident_topic("inc-0001")
    assert len(topic) <= 32 and topic.replace("-", "").replace("_", "").isalnum()
    assert topic == incident_topic("inc-0001") != incident_topic("inc-0002")
