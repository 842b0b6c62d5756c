"""Prometheus metrics of the alert side: the dispatcher (incidents, deliveries per notifier, escalations,
its backlog on the alert stream) and the workers' outbox."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, cast

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from alerts.bus import StreamConsumer
from alerts.dispatch_loop import DispatchLoop
from alerts.outbox import OutboxPublisher


class AlertSideCollector(Collector):
    def __init__(
        self,
        dispatch: Callable[[], DispatchLoop | None],
        outbox: Callable[[], OutboxPublisher | None],
    ) -> None:
        self.dispatch = dispatch
        self.outbox = outbox

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        loop = self.dispatch()
        if loop is not None:
            entries = CounterMetricFamily(
                "gridwatch_dispatcher_entries", "Alert stream entries by outcome", labels=["result"]
            )
            entries.add_metric(["handled"], loop.handled)
            entries.add_metric(["failed"], loop.failed)
            entries.add_metric(["reclaimed"], loop.reclaimed)
            yield entries
            yield CounterMetricFamily(
                "gridwatch_escalations",
                "Incidents escalated (nobody acknowledged in time)",
                value=loop.escalated,
            )
            stats = loop.dispatcher.stats
            yield CounterMetricFamily(
                "gridwatch_notifications", "Notifications made", value=stats.notifications
            )
            yield CounterMetricFamily(
                "gridwatch_delivery_duplicates_skipped",
                "Deliveries not made again (a redelivered or reclaimed entry)",
                value=stats.skipped_duplicates,
            )
            deliveries = CounterMetricFamily(
                "gridwatch_deliveries",
                "Deliveries by notifier and result (delivered, failed, gone)",
                labels=["notifier", "result"],
            )
            for (name, result), count in sorted(loop.dispatcher.deliveries_by_channel.items()):
                deliveries.add_metric([name, result], count)
            yield deliveries
            yield CounterMetricFamily(
                "gridwatch_dispatcher_dead_lettered",
                "Alert stream entries that could not be parsed, moved to the dead-letter stream",
                value=loop.consumer.dead_lettered,
            )
            yield from _stream_backlog(loop.consumer)
        outbox = self.outbox()
        if outbox is not None:
            yield GaugeMetricFamily(
                "gridwatch_outbox_depth", "Alert messages waiting on local disk for Redis", value=outbox.depth
            )
            yield CounterMetricFamily(
                "gridwatch_outbox_queued", "Alert messages that went to the outbox", value=outbox.queued
            )
            yield CounterMetricFamily(
                "gridwatch_outbox_dropped", "Alert messages dropped from a full outbox", value=outbox.dropped
            )


def _stream_backlog(consumer: StreamConsumer) -> Iterable[GaugeMetricFamily]:
    """The dispatchers' queue, asked of Redis at scrape time (XINFO GROUPS): alert stream entries no
    dispatcher has read yet (lag) and entries read but not acked (pending). Nothing while Redis is down."""
    try:
        groups = cast(list[dict[str, Any]], consumer.client.xinfo_groups(consumer.stream))
    except redis.RedisError:
        return
    for group in groups:
        name = group.get("name")
        if (name.decode() if isinstance(name, bytes) else name) != consumer.group:
            continue
        yield GaugeMetricFamily(
            "gridwatch_dispatcher_pending",
            "Alert stream entries a dispatcher has read and not yet handled (acked)",
            value=int(group.get("pending") or 0),
        )
        if group.get("lag") is not None:  # unknown to Redis for a while after some trims and deletes
            yield GaugeMetricFamily(
                "gridwatch_dispatcher_lag",
                "Alert stream entries no dispatcher has read yet",
                value=int(group["lag"]),
            )
