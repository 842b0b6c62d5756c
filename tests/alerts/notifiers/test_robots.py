"""WeCom and DingTalk group robots against local fake robot servers that check what the real ones check."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from collections.abc import Callable

import pytest

from alerts.notifiers.base import Notification, PermanentDeliveryError, RetryableDeliveryError
from alerts.notifiers.dingtalk import DingTalkNotifier, dingtalk_sign
from alerts.notifiers.retry import RetryPolicy, deliver
from alerts.notifiers.testing import HttpReceiver, ReceivedRequest, Reply
from alerts.notifiers.wecom import WeComNotifier

WECOM_KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"
DING_TOKEN = "tok9f8e7d6c5b4a"
DING_SECRET = "SEC0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"
NO_JITTER = RetryPolicy(max_attempts=4, jitter=0.0)


def fake_wecom(request: ReceivedRequest) -> Reply:
    if request.path != "/cgi-bin/webhook/send" or request.param("key") != WECOM_KEY:
        return Reply(200, body={"errcode": 93000, "errmsg": "invalid webhook url"})
    message = request.json()
    content = message.get("markdown", {}).get("content", "")
    if message.get("msgtype") != "markdown" or not content or len(content.encode()) > 4096:
        return Reply(200, body={"errcode": 40058, "errmsg": "markdown.content exceed max length"})
    return Reply(200, body={"errcode": 0, "errmsg": "ok"})


def fake_dingtalk(request: ReceivedRequest) -> Reply:
    if request.path != "/robot/send" or request.param("access_token") != DING_TOKEN:
        return Reply(200, body={"errcode": 300001, "errmsg": "token is not exist"})
    timestamp, sign = request.param("timestamp"), request.param("sign")
    if timestamp is None or sign is None:
        return Reply(200, body={"errcode": 310000, "errmsg": "sign not match"})
    expected = base64.b64encode(
        hmac.new(DING_SECRET.encode(), f"{timestamp}\n{DING_SECRET}".encode(), hashlib.sha256).digest()
    ).decode()
    if not hmac.compare_digest(sign, expected) or abs(int(timestamp) - time.time() * 1000) > 3_600_000:
        return Reply(200, body={"errcode": 310000, "errmsg": "sign not match"})
    message = request.json()
    if message.get("msgtype") != "markdown" or not message["markdown"].get("title"):
        return Reply(200, body={"errcode": 40035, "errmsg": "missing parameter"})
    return Reply(200, body={"errcode": 0, "errmsg": "ok"})


def wecom(server: HttpReceiver, key: str = WECOM_KEY) -> WeComNotifier:
    return WeComNotifier("village", f"{server.url}/cgi-bin/webhook/send?key={key}")


@pytest.fixture
def wecom_server() -> HttpReceiver:
    return HttpReceiver(fake_wecom)


@pytest.fixture
def dingtalk_server() -> HttpReceiver:
    return HttpReceiver(fake_dingtalk)


def test_wecom_markdown_is_accepted(
    wecom_server: HttpReceiver, make_notification: Callable[..., Notification]
) -> None:
    notification = make_notification()
    with wecom_server, wecom(wecom_server) as n:
        n.send(notification)
    [request] = wecom_server.accepted
    content = request.json()["markdown"]["content"]
    assert request.json()["msgtype"] == "markdown"
    assert content.startswith('### <font color="warning">[CRITICAL] New alert: Fire at East gate</font>')
    for text in (notification.body, "东村口 East gate", "东村 / G12", "fire 87%", f"]({notification.url})"):
        assert text in content


def test_wecom_long_body_is_cut_to_the_limit(
    wecom_server: HttpReceiver, make_notification: Callable[..., Notification]
) -> None:
    notification = make_notification(body="火" * 3000)  # 9000 bytes of UTF-8
    with wecom_server, wecom(wecom_server) as n:
        n.send(notification)
    content = wecom_server.accepted[0].json()["markdown"]["content"]
    assert len(content.encode()) <= 4096 and "…" in content and notification.url in content


def test_wecom_rate_limit_is_retried(
    wecom_server: HttpReceiver, make_notification: Callable[..., Notification]
) -> None:
    wecom_server.script(Reply(200, body={"errcode": 45009, "errmsg": "api freq out of limit"}))
    waits: list[float] = []
    with wecom_server, wecom(wecom_server) as n:
        result = deliver(n, make_notification(), policy=NO_JITTER, sleep=waits.append)
    assert (result.status, result.attempts, waits) == ("delivered", 2, [0.5])
    assert result.last_error is not None and "45009" in result.last_error


def test_wecom_bad_key_is_permanent_and_never_shows_the_key(
    wecom_server: HttpReceiver,
    make_notification: Callable[..., Notification],
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "00000000-dead-beef-0000-000000000000"
    with (
        caplog.at_level(logging.DEBUG),
        wecom_server,
        wecom(wecom_server, wrong) as notifier,
    ):
        result = deliver(notifier, make_notification(), policy=NO_JITTER, sleep=lambda _s: None)
        with pytest.raises(PermanentDeliveryError) as error:
            notifier.send(make_notification())
    assert (result.status, result.attempts) == ("failed", 1)
    assert result.last_error is not None and "93000" in result.last_error
    for text in (result.last_error, str(error.value), repr(notifier), caplog.text):
        assert wrong not in text
    assert "HTTP Request" in caplog.text  # httpx did log the request, redacted


def test_wecom_server_error_is_retryable(
    wecom_server: HttpReceiver, make_notification: Callable[..., Notification]
) -> None:
    wecom_server.script(Reply(502, body="bad gateway"), Reply(200, body="<html>not json</html>"))
    waits: list[float] = []
    with wecom_server, wecom(wecom_server) as n:
        result = deliver(n, make_notification(), policy=NO_JITTER, sleep=waits.append)
    assert (result.status, result.attempts, waits) == ("delivered", 3, [0.5, 1.0])


def test_dingtalk_signed_markdown_with_mentions(
    dingtalk_server: HttpReceiver, make_notification: Callable[..., Notification]
) -> None:
    notification = make_notification(severity="high")
    url = f"{dingtalk_server.url}/robot/send?access_token={DING_TOKEN}"
    mobiles = ["13800000001"]
    with dingtalk_server, DingTalkNotifier("patrol", url, DING_SECRET, at_mobiles=mobiles) as notifier:
        notifier.send(notification)
    [request] = dingtalk_server.accepted
    message = request.json()
    assert message["msgtype"] == "markdown"
    assert message["markdown"]["title"] == "[HIGH] Fire at East gate"
    text = message["markdown"]["text"]
    assert text.startswith("### [HIGH] New alert: Fire at East gate")
    assert f"![snapshot]({notification.snapshot_url})" in text and "@13800000001" in text
    assert message["at"] == {"atMobiles": ["13800000001"], "isAtAll": False}
    assert request.param("access_token") == DING_TOKEN


def test_dingtalk_wrong_secret_is_permanent(
    dingtalk_server: HttpReceiver, make_notification: Callable[..., Notification]
) -> None:
    url = f"{dingtalk_server.url}/robot/send?access_token={DING_TOKEN}"
    with dingtalk_server, DingTalkNotifier("patrol", url, "SECwrong") as notifier:
        with pytest.raises(PermanentDeliveryError, match="310000") as error:
            notifier.send(make_notification())
        with DingTalkNotifier("nosign", url) as unsigned, pytest.raises(PermanentDeliveryError):
            unsigned.send(make_notification())
    assert DING_TOKEN not in str(error.value) and "SECwrong" not in str(error.value)
    assert len(dingtalk_server.requests) == 2  # one attempt each, no retry


def test_dingtalk_rate_limit_codes_are_retryable(
    dingtalk_server: HttpReceiver, make_notification: Callable[..., Notification]
) -> None:
    dingtalk_server.script(
        Reply(200, body={"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}),
        Reply(200, body={"errcode": 410100, "errmsg": "发送速度太快而限流"}),
    )
    url = f"{dingtalk_server.url}/robot/send?access_token={DING_TOKEN}"
    waits: list[float] = []
    with dingtalk_server, DingTalkNotifier("patrol", url, DING_SECRET) as notifier:
        result = deliver(notifier, make_notification(), policy=NO_JITTER, sleep=waits.append)
    assert (result.status, result.attempts, waits) == ("delivered", 3, [0.5, 1.0])
    assert len(dingtalk_server.accepted) == 3  # HTTP 200 every time: the errcode decides


def test_dingtalk_sign_matches_the_documented_algorithm() -> None:
    # HMAC-SHA256(key=secret, msg="{timestamp}\n{secret}"), base64; the URL encoding is done when sending
    ts = 1_577_000_000_000
    expected = base64.b64encode(hmac.new(b"SECx", f"{ts}\nSECx".encode(), hashlib.sha256).digest()).decode()
    assert dingtalk_sign("SECx", ts) == expected


def test_robot_errors_are_the_right_kind(
    wecom_server: HttpReceiver, make_notification: Callable[..., Notification]
) -> None:
    wecom_server.script(Reply(200, body={"errcode": -1, "errmsg": "system busy"}))
    with wecom_server, wecom(wecom_server) as n:
        with pytest.raises(RetryableDeliveryError):
            n.send(make_notification())
        n.send(make_notification())
