"""WeCom (企业微信) group robot: `POST https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY`, markdown.

The robot answers HTTP 200 with {"errcode": N, "errmsg": ...}: 0 ok, 45009 (rate limit: 20 messages a minute
per robot) and -1 (system busy) retryable, anything else (93000 bad key, 40058 bad content, ...) permanent.
The URL holds the robot's key, so it is a secret: errors name only the host and path.
"""

from __future__ import annotations

import json

from alerts.notifiers.base import Notification, Notifier
from alerts.notifiers.markdown import render
from alerts.notifiers.transport import HttpPoster, describe_url, raise_for_errcode

DEFAULT_URL = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"
RETRYABLE_ERRCODES = frozenset({-1, 45009})
MAX_MARKDOWN_BYTES = 4096
_COLOURS = {"critical": "warning", "high": "warning", "normal": "info", "low": "comment"}


def _heading(notification: Notification, text: str) -> str:
    return f'<font color="{_COLOURS.get(notification.severity, "warning")}">{text}</font>'


def wecom_message(notification: Notification) -> dict[str, object]:
    """The JSON body for one notification."""
    content = render(notification, heading=_heading, images=False, max_bytes=MAX_MARKDOWN_BYTES)
    return {"msgtype": "markdown", "markdown": {"content": content}}


class WeComNotifier(Notifier):
    channel = "wecom"

    def __init__(self, name: str, url: str, timeout_s: float = 10.0) -> None:
        """`url`: the robot's full webhook URL including `?key=...`."""
        super().__init__(name, secrets=[url])
        self._url = url
        self._http = HttpPoster(timeout_s, secrets=[url])
        self._what = f"wecom robot {name!r} ({describe_url(url, with_path=True)})"

    def send(self, notification: Notification, target: str | None = None) -> None:
        body = json.dumps(wecom_message(notification), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json; charset=utf-8"}
        response = self._http.post(self._url, body, headers, self._what)
        raise_for_errcode(response.content, self._what, RETRYABLE_ERRCODES, secrets=[self._url])

    def close(self) -> None:
        self._http.close()
