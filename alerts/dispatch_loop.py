"""The dispatcher's thread: read the alert stream in a consumer group, hand each entry to the `Dispatcher`,
ack it once handled, take over entries a dead dispatcher left pending, and escalate on time.

An entry whose handling raised (the database unreachable, a bug) stays pending and is retried after
`reclaim_idle_s`; `reclaim_idle_s` must be longer than the longest handling (all retries of a notification),
or a slow entry would be taken over while it is still being delivered (the delivery keys would still keep
anyone from being notified twice, unless both send at the same instant).
"""

from __future__ import annotations

import logging
import threading
import time

from alerts.bus import BusMessage, StreamConsumer
from alerts.dispatcher import DeliveryPending, Dispatcher

log = logging.getLogger(__name__)


class DispatchLoop(threading.Thread):
    def __init__(
        self,
        consumer: StreamConsumer,
        dispatcher: Dispatcher,
        *,
        reclaim_idle_s: float = 120.0,
        reclaim_every_s: float = 10.0,
        escalate_every_s: float = 5.0,
        block_ms: int = 1000,
        batch: int = 32,
    ) -> None:
        super().__init__(name="dispatcher", daemon=True)
        self.consumer = consumer
        self.dispatcher = dispatcher
        self.reclaim_idle_s = reclaim_idle_s
        self.reclaim_every_s = reclaim_every_s
        self.escalate_every_s = escalate_every_s
        self.block_ms = block_ms
        self.batch = batch
        self.stopping = threading.Event()
        self.handled = 0
        self.failed = 0
        self.reclaimed = 0
        self.escalated = 0

    def run(self) -> None:
        self.consumer.ensure_group()
        next_reclaim = 0.0  # at start: take over what a previous dispatcher left
        next_escalation = time.monotonic()
        while not self.stopping.is_set():
            now = time.monotonic()
            if now >= next_reclaim:
                entries = self.consumer.reclaim_idle(int(self.reclaim_idle_s * 1000), self.batch)
                if entries:
                    log.warning("took over %d alert entries left pending by a dispatcher", len(entries))
                    self.reclaimed += len(entries)
                    self._handle(entries)
                next_reclaim = now + self.reclaim_every_s
            if now >= next_escalation:
                try:
                    self.escalated += self.dispatcher.escalate_due()
                except Exception:
                    log.exception("escalation check failed; trying again in %.0f s", self.escalate_every_s)
                next_escalation = now + self.escalate_every_s
            block = int(min(self.block_ms, max(1.0, (next_escalation - time.monotonic()) * 1000)))
            self._handle(self.consumer.read(self.batch, block_ms=block))

    def _handle(self, entries: list[tuple[str, BusMessage]]) -> None:
        for entry_id, message in entries:
            if self.stopping.is_set():
                return
            try:
                self.dispatcher.handle(message)
            except DeliveryPending as exc:
                self.failed += 1
                log.warning(
                    "alert entry %s: %s; left pending, tried again in %.0f s",
                    entry_id,
                    exc,
                    self.reclaim_idle_s,
                )
                continue
            except Exception:
                self.failed += 1
                log.exception("alert entry %s not handled; it stays pending and is retried", entry_id)
                continue
            self.consumer.ack(entry_id)
            self.handled += 1

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.consumer.stopping.set()
        if self.is_alive():
            self.join(timeout)
