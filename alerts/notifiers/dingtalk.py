"""DingTalk (钉钉) custom group robot: `POST https://oapi.dingtalk.com/robot/send?access_token=TOKEN`, msgtype
markdown, optionally signed and @-mentioning phone numbers.

Signing ("加签"): with the robot's secret, `timestamp` (unix ms) and
`sign` = urlencode(base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}"))) are added to the query;
DingTalk rejects a timestamp more than an hour off.

Answers are HTTP 200 with {"errcode": N, "errmsg": ...}: 0 ok; 130101 and 410100 (sending too fast; a robot
takes 20 messages a minute) and -1 (system busy) retryable; anything else (310000 bad keyword/sign/IP,
300001 bad token, 400102 robot disabled, ...) permanent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from alerts.notifiers.base import Notification, Notifier
from alerts.notifiers.markdown import one_line, render
from alerts.notifiers.transport import HttpPoster, describe_url, raise_for_errcode

DEFAULT_URL = "https://oapi.dingtalk.com/robot/send"
RETRYABLE_ERRCODES = frozenset({-1, 130101, 410100})
MAX_MARKDOWN_BYTES = 18_000  # DingTalk takes about 20 000 bytes a message


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """The `sign` query value (before URL encoding) for `timestamp_ms`."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def signed_url(url: str, secret: str, timestamp_ms: int) -> str:
    """`url` with `timestamp` and `sign` added to (or replaced in) its query."""
    parts = urlsplit(url)
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("timestamp", "sign")
    ]
    query += [("timestamp", str(timestamp_ms)), ("sign", dingtalk_sign(secret, timestamp_ms))]
    return urlunsplit(parts._replace(query=urlencode(query)))


def dingtalk_message(
    notification: Notification, at_mobiles: Sequence[str] = (), at_all: bool = False
) -> dict[str, object]:
    """The JSON body for one notification. DingTalk only notifies @mobiles that also appear in the text."""
    text = render(notification, images=True, max_bytes=MAX_MARKDOWN_BYTES)
    if at_mobiles:
        text += "\n\n" + " ".join(f"@{m}" for m in at_mobiles)
    title = one_line(f"[{notification.severity.upper()}] {notification.title}")[:64]
    return {
        "msgtype": "markdown",
        "markdown": {"title": title, "text": text},
        "at": {"atMobiles": list(at_mobiles), "isAtAll": at_all},
    }


class DingTalkNotifier(Notifier):
    channel = "dingtalk"

    def __init__(
        self,
        name: str,
        url: str,
        secret: str | None = None,
        at_mobiles: Sequence[str] = (),
        at_all: bool = False,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`url`: the robot's full webhook URL including `?access_token=...`; `secret`: its signing secret
        ("SEC..."), if signing is on."""
        super().__init__(name, secrets=[url, secret])
        self._url = url
        self._secret = secret
        self._at_mobiles = list(at_mobiles)
        self._at_all = at_all
        self._clock = clock
        self._http = HttpPoster(timeout_s, secrets=[url, secret])
        self._what = f"dingtalk robot {name!r} ({describe_url(url, with_path=True)})"

    def send(self, notification: Notification, target: str | None = None) -> None:
        url = self._url
        if self._secret:
            url = signed_url(url, self._secret, int(self._clock() * 1000))
        message = dingtalk_message(notification, self._at_mobiles, self._at_all)
        body = json.dumps(message, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json; charset=utf-8"}
        response = self._http.post(url, body, headers, self._what)
        raise_for_errcode(response.content, self._what, RETRYABLE_ERRCODES, secrets=[self._url, self._secret])

    def close(self) -> None:
        self._http.close()
