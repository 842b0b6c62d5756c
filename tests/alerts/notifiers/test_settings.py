"""Notifier config: the discriminated union, filters, secrets kept out of text, and `build_notifier`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from alerts.notifiers.base import Notification
from alerts.notifiers.dingtalk import DingTalkNotifier
from alerts.notifiers.mqtt import MqttNotifier
from alerts.notifiers.settings import (
    DingTalkSettings,
    MqttSettings,
    WebhookSettings,
    WebPushSettings,
    WeComSettings,
    build_notifier,
    parse_notifier_settings,
    parse_notifiers,
)
from alerts.notifiers.testing import MosquittoServer
from alerts.notifiers.webhook import WebhookNotifier
from alerts.notifiers.webpush import VapidKeys, WebPushNotifier
from alerts.notifiers.wecom import WeComNotifier

WECOM_URL = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=wk-secret-0001"
DING_URL = "https://oapi.dingtalk.com/robot/send?access_token=dt-secret-0002"


def test_union_picks_the_model_by_type() -> None:
    items = parse_notifiers(
        [
            {"type": "webhook", "name": "ops", "url": "https://ops.example/hook", "secret": "wh-secret-3"},
            {"type": "wecom", "name": "village-1", "url": WECOM_URL, "min_severity": "high"},
            {"type": "dingtalk", "name": "patrol", "url": DING_URL, "secret": "SEC-4", "at_mobiles": ["138"]},
            {"type": "mqtt", "name": "broker", "username": "gw", "password": "mq-secret-5"},
            {"type": "webpush", "name": "phones", "vapid_private_key": "x", "subject": "mailto:a@b.example"},
        ]
    )
    assert [type(i) for i in items] == [
        WebhookSettings,
        WeComSettings,
        DingTalkSettings,
        MqttSettings,
        WebPushSettings,
    ]
    mqtt = items[3]
    assert isinstance(mqtt, MqttSettings)
    assert (mqtt.prefix, mqtt.port, mqtt.discovery_prefix) == ("gridwatch", 1883, None)
    assert items[0].kinds == ["new", "update", "escalation", "resolved"] and items[0].teams is None
    # people's channels: one message per incident (and its escalation), not every update
    assert items[1].kinds == items[2].kinds == items[4].kinds == ["new", "escalation"]
    assert mqtt.kinds == items[0].kinds


@pytest.mark.parametrize(
    "data",
    [
        {"type": "webhook", "name": "ops", "url": "https://x.example", "colour": "red"},  # unknown key
        {"type": "pager", "name": "ops"},  # unknown type
        {"type": "webhook", "name": "Ops!", "url": "https://x.example"},  # bad name
        {"type": "webhook", "name": "ops", "url": "ftp://x.example"},
        {"type": "webhook", "name": "ops", "url": "https://x.example", "min_severity": "urgent"},
        {"type": "webhook", "name": "ops", "url": "https://x.example", "kinds": []},
        {"type": "mqtt", "name": "m", "password": "p"},  # password without a user
        {"type": "webpush", "name": "p", "subject": "mailto:a@b.example"},  # no key
        {"type": "webpush", "name": "p", "subject": "ops", "vapid_private_key": "x"},
    ],
)
def test_invalid_sections_are_rejected(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        parse_notifier_settings(data)


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        parse_notifiers([{"type": "mqtt", "name": "a"}, {"type": "mqtt", "name": "a", "port": 1884}])


def test_secrets_stay_out_of_repr_dumps_and_errors() -> None:
    sections = [
        {"type": "webhook", "name": "ops", "url": "https://ops.example/hook", "secret": "wh-secret-3"},
        {"type": "wecom", "name": "village-1", "url": WECOM_URL},
        {"type": "dingtalk", "name": "patrol", "url": DING_URL, "secret": "SEC-4"},
        {"type": "mqtt", "name": "broker", "username": "gw", "password": "mq-secret-5"},
        {
            "type": "webpush",
            "name": "phones",
            "vapid_private_key": "vp-secret-6",
            "subject": "mailto:a@b.example",
        },
    ]
    secrets = ("wh-secret-3", "wk-secret-0001", "dt-secret-0002", "SEC-4", "mq-secret-5", "vp-secret-6")
    texts = []
    for section in sections:
        settings = parse_notifier_settings(section)
        texts += [repr(settings), str(settings), settings.model_dump_json()]
    bad = {"type": "wecom", "name": "v", "url": "ftp://h/?key=wk-secret-0001"}
    with pytest.raises(ValidationError) as error:
        parse_notifier_settings(bad)
    texts.append(str(error.value))
    for text in texts:
        for secret in secrets:
            assert secret not in text, text


def test_accepts_filters_on_team_severity_kind_and_enabled(
    make_notification: Callable[..., Notification],
) -> None:
    settings = parse_notifier_settings(
        {
            "type": "webhook", "name": "ops", "url": "https://x.example", "teams": ["patrol-3"],
            "min_severity": "high", "kinds": ["new", "escalation"],
        }
    )  # fmt: skip
    assert settings.accepts(make_notification(severity="critical"))
    assert settings.accepts(make_notification(severity="high", kind="escalation"))
    assert not settings.accepts(make_notification(severity="normal"))
    assert not settings.accepts(make_notification(kind="resolved"))
    assert not settings.accepts(make_notification(team="patrol-9"))
    assert not settings.accepts(make_notification(team=None))
    everyone = parse_notifier_settings({"type": "mqtt", "name": "m"})
    assert everyone.accepts(make_notification(team=None, severity="low", kind="resolved"))
    off = parse_notifier_settings({"type": "mqtt", "name": "m", "enabled": False})
    assert not off.accepts(make_notification())


def test_build_notifier_makes_each_channel(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    keys = VapidKeys.generate()
    key_file = tmp_path / "vapid.pem"
    keys.save(key_file)
    sections = [
        ({"type": "webhook", "name": "ops", "url": "https://ops.example/hook"}, WebhookNotifier),
        ({"type": "wecom", "name": "w", "url": WECOM_URL}, WeComNotifier),
        ({"type": "dingtalk", "name": "d", "url": DING_URL, "secret": "SEC-4"}, DingTalkNotifier),
        ({"type": "mqtt", "name": "m", "host": mosquitto.host, "port": mosquitto.port}, MqttNotifier),
        (
            {
                "type": "webpush",
                "name": "p",
                "subject": "mailto:a@b.example",
                "vapid_private_key": keys.private_base64(),
            },
            WebPushNotifier,
        ),
        (
            {
                "type": "webpush",
                "name": "f",
                "subject": "https://gw.example",
                "vapid_private_key_file": str(key_file),
            },
            WebPushNotifier,
        ),
    ]
    for section, cls in sections:
        notifier = build_notifier(parse_notifier_settings(section))
        try:
            assert isinstance(notifier, cls)
            assert notifier.name == section["name"] and notifier.channel == section["type"]
            assert "secret" not in repr(notifier)
            if isinstance(notifier, MqttNotifier):
                assert notifier.wait_connected(10)
        finally:
            notifier.close()


def test_config_round_trips_through_json() -> None:
    section = {"type": "mqtt", "name": "m", "host": "broker.lan", "discovery_prefix": "homeassistant"}
    settings = parse_notifier_settings(section)
    again = parse_notifier_settings(json.loads(settings.model_dump_json()))
    assert again == settings
