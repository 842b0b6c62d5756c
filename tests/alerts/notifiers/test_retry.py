"""Backoff arithmetic, error classification and `deliver`'s outcomes, with a scripted notifier."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from email.utils import formatdate

import pytest

from alerts.notifiers.base import (
    Notification,
    Notifier,
    PermanentDeliveryError,
    RetryableDeliveryError,
    redact,
)
from alerts.notifiers.retry import RetryPolicy, deliver
from alerts.notifiers.transport import parse_retry_after, raise_for_errcode, raise_for_http_status


class Scripted(Notifier):
    """Raises the scripted errors in turn, then succeeds."""

    channel = "webhook"

    def __init__(self, *errors: Exception, secrets: tuple[str, ...] = ()) -> None:
        super().__init__("scripted", secrets=secrets)
        self.errors = list(errors)
        self.calls = 0

    def send(self, notification: Notification, target: str | None = None) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(base_s=0.5, max_s=5, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert policy.delay(1, retry_after_s=3.0) == 3.0  # a longer Retry-After wins
    assert policy.delay(3, retry_after_s=0.1) == 2.0  # a shorter one does not
    assert policy.delay(1, retry_after_s=600) == 5.0  # capped


def test_jitter_only_shortens_within_its_fraction() -> None:
    policy = RetryPolicy(base_s=1.0, max_s=30, jitter=0.25, rng=random.Random(7))
    delays = [policy.delay(3) for _ in range(500)]
    assert all(3.0 <= d <= 4.0 for d in delays)
    assert max(delays) - min(delays) > 0.5  # actually spread


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=1.5)


def test_permanent_error_stops_at_once(make_notification: Callable[..., Notification]) -> None:
    notifier = Scripted(RetryableDeliveryError("busy", 503), PermanentDeliveryError("no", 403))
    waits: list[float] = []
    result = deliver(notifier, make_notification(), policy=RetryPolicy(jitter=0), sleep=waits.append)
    assert (result.status, result.attempts, result.http_status, result.last_error) == ("failed", 2, 403, "no")
    assert waits == [0.5]


def test_gone_is_reported(make_notification: Callable[..., Notification]) -> None:
    notifier = Scripted(PermanentDeliveryError("expired", 410, gone=True))
    result = deliver(notifier, make_notification(), sleep=lambda _s: None)
    assert (result.status, result.attempts, result.http_status) == ("gone", 1, 410)


def test_gives_up_after_max_attempts(make_notification: Callable[..., Notification]) -> None:
    notifier = Scripted(*[RetryableDeliveryError("down", 502) for _ in range(10)])
    waits: list[float] = []
    result = deliver(
        notifier, make_notification(), policy=RetryPolicy(max_attempts=3, jitter=0), sleep=waits.append
    )
    assert (result.status, result.attempts, result.http_status) == ("failed", 3, 502)
    assert notifier.calls == 3 and waits == [0.5, 1.0]


def test_unexpected_exception_is_a_failure_with_secrets_redacted(
    make_notification: Callable[..., Notification], caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Scripted(RuntimeError("boom at https://h/x?access_token=tok-1 using pw-2"), secrets=("pw-2",))
    with caplog.at_level(logging.ERROR):
        result = deliver(notifier, make_notification(), sleep=lambda _s: None)
    assert result.status == "failed" and result.attempts == 1
    assert result.last_error is not None and "RuntimeError" in result.last_error
    for text in (result.last_error, caplog.text):
        assert "tok-1" not in text and "pw-2" not in text
    assert "Traceback" in caplog.text


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (200, None),
        (204, None),
        (301, PermanentDeliveryError),
        (400, PermanentDeliveryError),
        (401, PermanentDeliveryError),
        (404, PermanentDeliveryError),
        (408, RetryableDeliveryError),
        (429, RetryableDeliveryError),
        (500, RetryableDeliveryError),
        (503, RetryableDeliveryError),
    ],
)
def test_http_status_classification(status: int, error: type[Exception] | None) -> None:
    if error is None:
        raise_for_http_status(status, "x")
    else:
        with pytest.raises(error):
            raise_for_http_status(status, "x")


def test_gone_statuses_and_retry_after() -> None:
    with pytest.raises(PermanentDeliveryError) as gone:
        raise_for_http_status(410, "push", gone_statuses={404, 410})
    assert gone.value.gone
    with pytest.raises(PermanentDeliveryError) as bad:
        raise_for_http_status(400, "push", gone_statuses={404, 410})
    assert not bad.value.gone
    with pytest.raises(RetryableDeliveryError) as busy:
        raise_for_http_status(503, "x", {"retry-after": "12"})
    assert busy.value.retry_after_s == 12.0


def test_parse_retry_after() -> None:
    now = 1_750_000_000.0
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after(formatdate(now + 42, usegmt=True), now=now) == pytest.approx(42, abs=1)
    assert parse_retry_after(formatdate(now - 42, usegmt=True), now=now) == 0.0
    for junk in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(junk) is None


def test_errcode_classification() -> None:
    raise_for_errcode(b'{"errcode":0,"errmsg":"ok"}', "robot", {45009})
    with pytest.raises(RetryableDeliveryError):
        raise_for_errcode(b'{"errcode":45009,"errmsg":"api freq out of limit"}', "robot", {45009})
    with pytest.raises(PermanentDeliveryError, match="93000"):
        raise_for_errcode(b'{"errcode":93000,"errmsg":"invalid webhook url"}', "robot", {45009})
    with pytest.raises(RetryableDeliveryError, match="unreadable"):
        raise_for_errcode(b"<html>gateway</html>", "robot", {45009})


def test_redact() -> None:
    text = "POST https://qyapi.example/send?key=abc-123&x=1 and https://u:hunter2@h/p?access_token=zzz"
    clean = redact(text, ["s3cret"])
    assert "abc-123" not in clean and "hunter2" not in clean and "zzz" not in clean
    assert "x=1" in clean and "https://u:***@h/p" in clean
    assert redact("value s3cret and s3cret%21", ["s3cret!"]) == "value s3cret and ***"
