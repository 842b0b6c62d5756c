"""Notification channels: deliver a notification about an incident to people and systems.

`base` (the `Notification` value, the `Notifier` interface, the two delivery errors), `retry` (`deliver` with
backoff), `settings` (config models and `build_notifier`), and one module per channel: `webhook`, `wecom`,
`dingtalk`, `mqtt`, `webpush`. Channel modules are imported on demand (paho, pywebpush load only where used).
"""

from alerts.notifiers.base import (
    Notification,
    Notifier,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from alerts.notifiers.retry import DeliveryResult, RetryPolicy, deliver
from alerts.notifiers.settings import (
    NotifierSettings,
    build_notifier,
    parse_notifier_settings,
    parse_notifiers,
)

__all__ = [
    "DeliveryResult",
    "Notification",
    "Notifier",
    "NotifierSettings",
    "PermanentDeliveryError",
    "RetryPolicy",
    "RetryableDeliveryError",
    "build_notifier",
    "deliver",
    "parse_notifier_settings",
    "parse_notifiers",
]
