"""Settings -> a running dispatcher: notifiers, routing, incidents, the consumer group, escalation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import redis

from alerts.bus import AlertBus, BusMessage, StreamConsumer
from alerts.dispatch_loop import DispatchLoop
from alerts.dispatcher import Channel, Dispatcher
from alerts.notifiers.retry import RetryPolicy
from alerts.notifiers.settings import build_notifier
from alerts.status_relay import CameraStatusRelay, mqtt_sinks
from gridwatch.alerting import LiveRouter, build_incident_policy
from gridwatch.settings import Settings
from storage.metadata import MetadataDB

GROUP = "dispatchers"


def redis_lock(client: redis.Redis, timeout_s: float = 30.0) -> Callable[[str], AbstractContextManager[None]]:
    """A lock factory for the dispatcher: one Redis lock per key, so that dispatchers on many machines do
    not open two incidents for one fire."""

    @contextmanager
    def lock(key: str) -> Iterator[None]:
        with client.lock(f"gridwatch:lock:{key}", timeout=timeout_s, blocking_timeout=timeout_s):
            yield

    return lock


def build_dispatcher(
    s: Settings,
    db: MetadataDB,
    client: redis.Redis,
    retry: RetryPolicy | None = None,
    publish: Callable[[BusMessage], object] | None = None,
) -> Dispatcher:
    """`publish`: where the incident each alert joined is announced (the alert stream, for the live feed)."""
    channels = [Channel(build_notifier(n), n.accepts) for n in s.notifiers if n.enabled]
    return Dispatcher(
        db,
        LiveRouter(s, db),
        channels,
        policy=build_incident_policy(s),
        retry=retry,
        escalate_after_s=s.routing.escalate_after_s,
        public_url=s.api.public_url,
        timezone=s.timezone,
        lock=redis_lock(client),
        publish=publish,
    )


def build_status_relay(s: Settings, bus: AlertBus, dispatcher: Dispatcher) -> CameraStatusRelay | None:
    """Camera states to the MQTT notifiers (retained, for Home Assistant); None without any."""
    sinks = mqtt_sinks(c.notifier for c in dispatcher.channels)
    if not sinks:
        return None
    cameras = {c.id: {"name": c.name, "village": c.village, "grid": c.grid} for c in s.cameras}
    return CameraStatusRelay(bus.client, sinks, cameras=cameras)


def build_dispatch_loop(s: Settings, bus: AlertBus, dispatcher: Dispatcher) -> DispatchLoop:
    return DispatchLoop(
        StreamConsumer(bus, GROUP),
        dispatcher,
        reclaim_idle_s=s.routing.reclaim_idle_s,
        escalate_every_s=s.routing.escalate_check_s,
    )
