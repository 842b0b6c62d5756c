"""Config of the notifier instances: one model per channel, a union discriminated on `type`, and the factory.

Example (YAML):
    notifiers:
      - {type: webhook, name: ops, url: "https://ops.example/hook", secret: "..."}
      - {type: wecom, name: village-group, url: "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=..."}
      - {type: mqtt, name: broker, host: 127.0.0.1, discovery_prefix: homeassistant, min_severity: high}
Secrets (webhook secret, robot URLs, which carry their key, MQTT password, VAPID private key) are `SecretStr`:
they show as ********** in reprs and dumps.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, field_validator, model_validator

from alerts.notifiers.base import Notification, Notifier, severity_rank

if TYPE_CHECKING:
    from alerts.notifiers.webpush import VapidKeys

Severity = Literal["low", "normal", "high", "critical"]
Kind = Literal["new", "update", "escalation", "resolved"]


def _http_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an http(s) URL")
    return value


class NotifierSettingsBase(BaseModel):
    # hide_input_in_errors: a rejected robot URL or key must not be echoed in the validation error
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="Instance name, unique")
    enabled: bool = Field(True, description="Off: configured but sends nothing")
    teams: list[str] | None = Field(
        None, description="Only notifications routed to these team ids; unset: all notifications"
    )
    min_severity: Severity = Field("low", description="Only notifications at least this severe")
    kinds: list[Kind] = Field(
        ["new", "update", "escalation", "resolved"],
        min_length=1,
        description="Which notification kinds to send",
    )

    def accepts(self, notification: Notification) -> bool:
        """Whether this instance wants `notification` (enabled, team, severity and kind filters)."""
        if not self.enabled or notification.kind not in self.kinds:
            return False
        if self.teams is not None and notification.team not in self.teams:
            return False
        return severity_rank(notification.severity) >= severity_rank(self.min_severity)


class WebhookSettings(NotifierSettingsBase):
    type: Literal["webhook"] = "webhook"
    url: str = Field(..., description="Receiver URL (POST, JSON body)")
    secret: SecretStr | None = Field(None, description="HMAC-SHA256 signing secret; unset: unsigned")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers")
    timeout_s: float = Field(10.0, gt=0, le=120, description="Request timeout")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value, "url")


class _ForPeopleSettings(NotifierSettingsBase):
    """Channels people read (phones, group chats): one message per incident and its escalation by default."""

    kinds: list[Kind] = Field(
        ["new", "escalation"],
        min_length=1,
        description="Which notification kinds to send; people's phones and groups get one message per "
        "incident and its escalation by default (add update, resolved for more)",
    )


class _RobotSettings(_ForPeopleSettings):
    url: SecretStr = Field(..., description="The robot's webhook URL, with its key (?key= / ?access_token=)")
    timeout_s: float = Field(10.0, gt=0, le=120, description="Request timeout")

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        _http_url(value.get_secret_value(), "url")
        return value


class WeComSettings(_RobotSettings):
    type: Literal["wecom"] = "wecom"


class DingTalkSettings(_RobotSettings):
    type: Literal["dingtalk"] = "dingtalk"
    secret: SecretStr | None = Field(None, description="Signing secret (SEC...), when the robot signs")
    at_mobiles: list[str] = Field(default_factory=list, description="Phone numbers to @-mention")
    at_all: bool = Field(False, description="@everyone in the group")


class MqttSettings(NotifierSettingsBase):
    type: Literal["mqtt"] = "mqtt"
    host: str = Field("127.0.0.1", min_length=1, description="Broker host")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual with TLS)")
    prefix: str = Field("gridwatch", pattern=r"^[^#+\s]+$", description="Topic prefix")
    client_id: str | None = Field(None, description="MQTT client id; unset: unique per process")
    username: str | None = Field(None, description="Broker user")
    password: SecretStr | None = Field(None, description="Broker password")
    tls: bool = Field(False, description="Connect with TLS")
    ca_file: Path | None = Field(None, description="CA bundle for TLS; unset: the system's")
    keepalive_s: int = Field(
        30, ge=5, le=3600, description="Keepalive; a dead client's will fires after ~1.5x"
    )
    publish_timeout_s: float = Field(10.0, gt=0, le=120, description="How long send() waits for PUBACKs")
    discovery_prefix: str | None = Field(
        None, description="Home Assistant discovery prefix (usually 'homeassistant'); unset: no discovery"
    )
    availability_topic: str | None = Field(None, description="Default: {prefix}/status")

    @model_validator(mode="after")
    def _credentials(self) -> MqttSettings:
        if self.password is not None and self.username is None:
            raise ValueError("password needs a username")
        return self


class WebPushSettings(_ForPeopleSettings):
    type: Literal["webpush"] = "webpush"
    vapid_private_key: SecretStr | None = Field(None, description="VAPID private key, PEM or base64")
    vapid_private_key_file: Path | None = Field(None, description="File with the VAPID private key (PEM)")
    subject: str = Field(
        ..., pattern=r"^(mailto:.+@.+|https://.+)$", description="VAPID contact: mailto: or https:"
    )
    ttl_s: int = Field(
        3600, ge=0, le=28 * 86400, description="How long a push service keeps an undelivered push"
    )
    timeout_s: float = Field(10.0, gt=0, le=120, description="Request timeout")

    def vapid_keys(self) -> VapidKeys:
        """The VAPID key pair (read from the file, when it is in one)."""
        from alerts.notifiers.webpush import VapidKeys

        if self.vapid_private_key is not None:
            return VapidKeys.load(self.vapid_private_key.get_secret_value())
        assert self.vapid_private_key_file is not None
        return VapidKeys.from_file(self.vapid_private_key_file)

    @model_validator(mode="after")
    def _one_key(self) -> WebPushSettings:
        if (self.vapid_private_key is None) == (self.vapid_private_key_file is None):
            raise ValueError("set exactly one of vapid_private_key and vapid_private_key_file")
        return self


NotifierSettings = Annotated[
    WebhookSettings | WeComSettings | DingTalkSettings | MqttSettings | WebPushSettings,
    Field(discriminator="type"),
]
# The outermost validator decides whether errors echo their input: a config model that embeds these sections
# needs hide_input_in_errors=True as well, or a rejected robot URL shows up with its key.
_HIDE_INPUT = ConfigDict(hide_input_in_errors=True)
_ADAPTER: TypeAdapter[NotifierSettings] = TypeAdapter(NotifierSettings, config=_HIDE_INPUT)
_LIST_ADAPTER: TypeAdapter[list[NotifierSettings]] = TypeAdapter(list[NotifierSettings], config=_HIDE_INPUT)


def parse_notifier_settings(data: object) -> NotifierSettings:
    """One notifier section (a dict, e.g. from YAML) validated into its model."""
    return _ADAPTER.validate_python(data)


def parse_notifiers(data: object) -> list[NotifierSettings]:
    """A list of notifier sections; names must be unique."""
    items = _LIST_ADAPTER.validate_python(data)
    names = [item.name for item in items]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate notifier names: {', '.join(duplicates)}")
    return items


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def build_notifier(settings: NotifierSettings) -> Notifier:
    """The notifier for one settings instance (an MQTT one starts connecting at once)."""
    if isinstance(settings, WebhookSettings):
        from alerts.notifiers.webhook import WebhookNotifier

        return WebhookNotifier(
            settings.name, settings.url, _secret(settings.secret), settings.timeout_s, settings.headers
        )
    if isinstance(settings, WeComSettings):
        from alerts.notifiers.wecom import WeComNotifier

        return WeComNotifier(settings.name, settings.url.get_secret_value(), settings.timeout_s)
    if isinstance(settings, DingTalkSettings):
        from alerts.notifiers.dingtalk import DingTalkNotifier

        return DingTalkNotifier(
            settings.name, settings.url.get_secret_value(), _secret(settings.secret), settings.at_mobiles,
            settings.at_all, settings.timeout_s,
        )  # fmt: skip
    if isinstance(settings, MqttSettings):
        from alerts.notifiers.mqtt import MqttNotifier

        return MqttNotifier(
            settings.name, settings.host, settings.port, settings.prefix, client_id=settings.client_id,
            username=settings.username, password=_secret(settings.password), tls=settings.tls,
            ca_file=str(settings.ca_file) if settings.ca_file else None, keepalive_s=settings.keepalive_s,
            publish_timeout_s=settings.publish_timeout_s, discovery_prefix=settings.discovery_prefix,
            availability_topic=settings.availability_topic,
        )  # fmt: skip
    if isinstance(settings, WebPushSettings):
        from alerts.notifiers.webpush import WebPushNotifier

        keys = settings.vapid_keys()
        return WebPushNotifier(settings.name, keys, settings.subject, settings.ttl_s, settings.timeout_s)
    raise TypeError(f"unknown notifier settings {type(settings).__name__}")
