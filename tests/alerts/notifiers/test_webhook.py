"""The generic webhook against a real local HTTP receiver: signature, retries, status classification."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from email.utils import formatdate

from alerts.notifiers.base import Notification
from alerts.notifiers.retry import RetryPolicy, deliver
from alerts.notifiers.testing import HttpReceiver, ReceivedRequest, Reply, free_port
from alerts.notifiers.webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookNotifier,
    sign,
    verify_signature,
)

SECRET = "whsec-test-8f3a1c"
NO_JITTER = RetryPolicy(max_attempts=5, base_s=0.5, max_s=30, jitter=0.0)


def verifying(secret: str) -> Callable[[ReceivedRequest], Reply]:
    """A receiver that accepts only correctly signed, fresh requests (as a real receiver should)."""

    def respond(request: ReceivedRequest) -> Reply:
        ok = verify_signature(
            secret, request.headers.get("x-gridwatch-timestamp"), request.body,
            request.headers.get("x-gridwatch-signature"),
        )  # fmt: skip
        return Reply(200) if ok else Reply(401, body="bad signature")

    return respond


class FakeSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def test_signed_post_is_verified_by_the_receiver(
    http_receiver: HttpReceiver, make_notification: Callable[..., Notification]
) -> None:
    http_receiver.responder = verifying(SECRET)
    notification = make_notification()
    with WebhookNotifier("ops", f"{http_receiver.url}/hook", SECRET) as notifier:
        result = deliver(notifier, notification, policy=NO_JITTER, sleep=FakeSleep())
    assert result.status == "delivered" and result.attempts == 1
    [request] = http_receiver.accepted
    assert request.method == "POST" and request.path == "/hook"
    assert request.headers["content-type"].startswith("application/json")
    assert request.headers[DELIVERY_HEADER.lower()] == notification.dedupe_key
    assert abs(int(request.headers[TIMESTAMP_HEADER.lower()]) - time.time()) < 5
    assert request.headers[SIGNATURE_HEADER.lower()].startswith("sha256=")
    assert request.json() == notification.as_json()
    assert json.loads(request.body)["camera_name"] == "东村口 East gate"


def test_receiver_rejects_wrong_secret(
    http_receiver: HttpReceiver, make_notification: Callable[..., Notification]
) -> None:
    http_receiver.responder = verifying(SECRET)
    with WebhookNotifier("ops", http_receiver.url, "another-secret") as notifier:
        result = deliver(notifier, make_notification(), policy=NO_JITTER, sleep=FakeSleep())
    assert (result.status, result.attempts, result.http_status) == ("failed", 1, 401)
    assert http_receiver.accepted == []


def test_tampered_body_and_stale_timestamp_fail_verification(
    http_receiver: HttpReceiver, make_notification: Callable[..., Notification]
) -> None:
    with WebhookNotifier("ops", http_receiver.url, SECRET) as notifier:
        notifier.send(make_notification())
    [request] = http_receiver.requests
    timestamp = request.headers["x-gridwatch-timestamp"]
    signature = request.headers["x-gridwatch-signature"]
    assert verify_signature(SECRET, timestamp, request.body, signature)
    tampered = request.body.replace(b'"critical"', b'"low"')
    assert tampered != request.body
    assert not verify_signature(SECRET, timestamp, tampered, signature)
    assert not verify_signature("wrong", timestamp, request.body, signature)
    assert not verify_signature(SECRET, int(timestamp) + 1, request.body, signature)
    assert not verify_signature(SECRET, timestamp, request.body, signature, now=int(timestamp) + 301)
    assert verify_signature(SECRET, timestamp, request.body, signature, now=int(timestamp) + 299)
    assert not verify_signature(SECRET, timestamp, request.body, signature, now=int(timestamp) - 301)
    assert not verify_signature(SECRET, None, request.body, signature)
    assert not verify_signature(SECRET, "soon", request.body, signature)
    assert not verify_signature(SECRET, timestamp, request.body, None)
    assert not verify_signature(SECRET, timestamp, request.body, signature.upper())


def test_stale_signature_from_a_replayed_request_is_refused(http_receiver: HttpReceiver) -> None:
    old = int(time.time()) - 3600
    body = b'{"dedupe_key":"inc-1:new"}'
    assert not verify_signature(SECRET, old, body, sign(SECRET, old, body))
    assert verify_signature(SECRET, old, body, sign(SECRET, old, body), now=old + 10)


def test_two_500s_then_200_is_delivered_once(
    http_receiver: HttpReceiver, make_notification: Callable[..., Notification]
) -> None:
    http_receiver.script(Reply(500), Reply(503))
    notification = make_notification()
    sleep = FakeSleep()
    with WebhookNotifier("ops", http_receiver.url, SECRET) as notifier:
        result = deliver(notifier, notification, policy=NO_JITTER, sleep=sleep)
    assert (result.status, result.attempts) == ("delivered", 3)
    assert result.last_error is not None and "HTTP 503" in result.last_error
    assert sleep.waits == [0.5, 1.0]
    assert len(http_receiver.requests) == 3
    keys = Counter(r.headers["x-gridwatch-delivery"] for r in http_receiver.accepted)
    assert keys == {notification.dedupe_key: 1}
    # every attempt carried the same dedupe key, each freshly signed
    assert {r.headers["x-gridwatch-delivery"] for r in http_receiver.requests} == {notification.dedupe_key}


def test_429_retry_after_seconds_is_honoured(
    http_receiver: HttpReceiver, make_notification: Callable[..., Notification]
) -> None:
    http_receiver.script(Reply(429, {"Retry-After": "7"}), Reply(429, {"Retry-After": "120"}))
    sleep = FakeSleep()
    with WebhookNotifier("ops", http_receiver.url) as notifier:
        result = deliver(notifier, make_notification(), policy=NO_JITTER, sleep=sleep)
    assert (result.status, result.attempts) == ("delivered", 3)
    assert sleep.waits == [7.0, 30.0]  # the second Retry-After is capped at max_s


def test_429_retry_after_http_date_is_honoured(
    http_receiver: HttpReceiver, make_notification: Callable[..., Notification]
) -> None:
    http_receiver.script(Reply(429, {"Retry-After": formatdate(time.time() + 10, usegmt=True)}))
    sleep = FakeSleep()
    with WebhookNotifier("ops", http_receiver.url) as notifier:
        result = deliver(notifier, make_notification(), policy=NO_JITTER, sleep=sleep)
    assert result.status == "delivered"
    [wait] = sleep.waits
    assert 8.0 <= wait <= 10.0


def test_400_is_permanent_after_one_attempt(
    http_receiver: HttpReceiver, make_notification: Callable[..., Notification]
) -> None:
    http_receiver.script(Reply(400, body="bad request"))
    sleep = FakeSleep()
    with WebhookNotifier("ops", http_receiver.url) as notifier:
        result = deliver(notifier, make_notification(), policy=NO_JITTER, sleep=sleep)
    assert (result.status, result.attempts, result.http_status) == ("failed", 1, 400)
    assert sleep.waits == []
    assert len(http_receiver.requests) == 1


def test_connection_refused_is_retried_then_fails(make_notification: Callable[..., Notification]) -> None:
    port = free_port()  # nothing listens there
    sleep = FakeSleep()
    with WebhookNotifier("ops", f"http://127.0.0.1:{port}/hook?token=s3cr3t-token") as notifier:
        result = deliver(
            notifier, make_notification(), policy=RetryPolicy(max_attempts=4, jitter=0.0), sleep=sleep
        )
    assert (result.status, result.attempts, result.http_status) == ("failed", 4, None)
    assert sleep.waits == [0.5, 1.0, 2.0]
    assert result.last_error is not None and "s3cr3t-token" not in result.last_error


def test_slow_receiver_times_out_retryably(
    http_receiver: HttpReceiver, make_notification: Callable[..., Notification]
) -> None:
    http_receiver.script(Reply(200, delay_s=1.5))
    sleep = FakeSleep()
    with WebhookNotifier("ops", http_receiver.url, timeout_s=0.3) as notifier:
        result = deliver(notifier, make_notification(), policy=NO_JITTER, sleep=sleep)
    assert (result.status, result.attempts) == ("delivered", 2)
    assert result.last_error is not None and "timed out" in result.last_error


def test_errors_never_show_the_secret(
    http_receiver: HttpReceiver, make_notification: Callable[..., Notification]
) -> None:
    http_receiver.script(Reply(500))
    notifier = WebhookNotifier(
        "ops", f"http://user:pw-123@127.0.0.1:{http_receiver.port}/h?key=k-999", SECRET
    )
    with notifier:
        result = deliver(notifier, make_notification(), policy=RetryPolicy(max_attempts=1), sleep=FakeSleep())
    assert result.status == "failed" and result.last_error is not None
    for secret in (SECRET, "pw-123", "k-999"):
        assert secret not in result.last_error
        assert secret not in repr(notifier)
