"""A local outbox in front of the alert bus: no alert is lost while Redis is unreachable.

`OutboxPublisher.publish(message)` is what the detection side calls. It tries XADD on a client of its own
with short timeouts and no retries (so it never holds the caller for long); when that fails it appends the
message to a local SQLite file and a background thread drains the file, oldest first, once Redis answers.
While the outbox holds anything, new messages go behind it, so each producer's messages reach the stream
in the order they were published. What is in the file at start (a crash, a stop during an outage) is
drained first.

Why SQLite (WAL, synchronous=FULL) rather than an fsynced append-only file: an append and a delete of the
oldest rows are each one atomic, durable transaction (a kill -9 or a power cut mid-write leaves no torn
record to detect and skip), the head can be deleted without rewriting or compacting a file, and the depth
is a COUNT. The cost, one fsync per queued message, is paid only during an outage and alerts are few.

Delivery is at-least-once: a message that reached Redis but whose reply was lost (the connection broke,
the process died between XADD and the outbox delete) is sent again. An alert ("alert" kind) is added to
the stream once all the same (`AlertBus.add`: a marker set with the entry); other kinds may repeat, and
consumers dedupe them by `alerts.bus.dedupe_key(message)` (alert_id, kind, sequence). Messages are never
dropped unless the outbox holds `max_items` (default 100,000: days of alerts for a whole county): then the
oldest goes, logged as an error and counted in `dropped`. One outbox file belongs to one process (each
worker has its own data dir).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from alerts.bus import AlertBus, BusMessage
from alerts.redis_connect import with_options

log = logging.getLogger(__name__)


def fast_client(client: redis.Redis, timeout_s: float) -> redis.Redis:
    """A client to the same server (or Sentinel service) as `client`, with `timeout_s` socket timeouts and
    no retries (`client` itself if its connection settings cannot be copied)."""
    fast = with_options(
        client, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
    )
    if fast is client:
        log.warning("publishing with the bus's own client (its timeouts apply)")
    return fast


class OutboxPublisher:
    """Publishes bus messages; keeps them in a local SQLite outbox while Redis cannot take them.

    Counters (for metrics): `published` (straight to Redis), `queued` (into the outbox), `drained` (from the
    outbox to Redis), `depth` (in the outbox now), `dropped` (oldest dropped at `max_items`), `lost` (could
    not even be written to the local disk).
    """

    def __init__(
        self,
        bus: AlertBus,
        path: Path | str,
        *,
        max_items: int = 100_000,
        timeout_s: float = 1.0,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
        batch: int = 100,
    ) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.bus = bus
        self.path = Path(path)
        self.max_items = max_items
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.batch = batch
        self.published = 0
        self.queued = 0
        self.drained = 0
        self.dropped = 0
        self.lost = 0
        self._client = fast_client(bus.client, timeout_s)
        self._lock = threading.Lock()  # the SQLite connection, `depth`, the direct-or-queue decision
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._down = False  # Redis failed and has not taken a message since (for logging once)
        self._db: sqlite3.Connection | None = _open(self.path)
        row = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        self.depth: int = row[0]
        if self.depth:
            log.info("outbox %s holds %d message(s) from before: sending them first", self.path, self.depth)
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)
        self._thread.start()

    def publish(self, message: BusMessage) -> None:
        """Send `message`, or queue it behind what is already queued. Never raises for Redis errors; holds
        the caller at most about `timeout_s` (once per outage: then messages are queued without trying)."""
        fields = message.fields()
        with self._lock:
            if self.depth == 0 and not self._closed:
                try:
                    self._xadd([fields])
                except Exception as exc:  # Redis errors above all; nothing may reach the detection loop
                    self._went_down(exc)
                else:
                    self.published += 1
                    return
            self._append(fields, message.alert_id)
        self._wake.set()

    def close(self, timeout: float = 2.0) -> None:
        """Drain for at most `timeout` seconds, then stop; what is left stays on disk for the next start."""
        deadline = time.monotonic() + timeout
        while self.depth and self._thread.is_alive() and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.02)
        with self._lock:
            self._closed = True
        self._stop.set()
        self._wake.set()
        self._thread.join(max(0.5, deadline - time.monotonic()))
        with self._lock:
            if self.depth:
                log.warning(
                    "%d message(s) left in the outbox %s: sent at the next start", self.depth, self.path
                )
            if self._db is not None:
                self._db.close()
                self._db = None
        self._client.close()

    # -- the outbox file ------------------------------------------------------------------------
    def _append(self, fields: dict[str, str], alert_id: str) -> None:
        """Queue one message (lock held). After close() it still goes to the file, for the next start."""
        db = self._db
        try:
            with contextlib.ExitStack() as stack:
                if db is None:
                    db = stack.enter_context(contextlib.closing(_open(self.path)))
                    log.warning(
                        "alert %s published after the outbox was closed: kept for the next start", alert_id
                    )
                with db:  # one transaction: drop the oldest (when full) and append
                    dropped = []
                    if self.depth >= self.max_items:
                        dropped = self._drop_oldest(db, self.depth - self.max_items + 1)
                    db.execute(
                        "INSERT INTO outbox (fields, queued_at) VALUES (?, ?)",
                        (json.dumps(fields), time.time()),
                    )
        except (sqlite3.Error, OSError):
            self.lost += 1
            log.exception("alert %s: Redis unreachable and the outbox %s failed: LOST", alert_id, self.path)
            return
        self.depth += 1 - len(dropped)
        self.queued += 1
        self.dropped += len(dropped)
        for text in dropped:
            log.error(
                "outbox %s is full (%d messages): dropped the oldest, alert %s",
                self.path,
                self.max_items,
                _alert_id(text),
            )

    def _drop_oldest(self, db: sqlite3.Connection, n: int) -> list[str]:
        rows = db.execute("SELECT id, fields FROM outbox ORDER BY id LIMIT ?", (n,)).fetchall()
        if rows:
            db.execute("DELETE FROM outbox WHERE id <= ?", (rows[-1][0],))
        return [text for _, text in rows]

    # -- draining -------------------------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        while True:
            self._wake.clear()
            if self._stop.is_set():
                return
            if self.depth == 0:
                self._wake.wait()
                continue
            try:
                sent = self._drain_batch()
            except Exception:  # the drainer must outlive anything: a dead one would keep the outbox forever
                log.exception("outbox %s: draining failed", self.path)
                sent = False
            if sent:
                failures = 0
                continue
            failures += 1
            self._stop.wait(min(self.retry_max_s, self.retry_initial_s * 2 ** min(failures - 1, 20)))

    def _drain_batch(self) -> bool:
        """Send the oldest `batch` messages, then delete them. False if Redis did not take them.

        After a failure only the oldest message is tried until one goes through: a Redis that froze (rather
        than died) executes every timed-out attempt when it wakes up, so each retry may become a duplicate.
        """
        with self._lock:
            if self._db is None:
                return True
            size = 1 if self._down else self.batch
            rows = self._db.execute("SELECT id, fields FROM outbox ORDER BY id LIMIT ?", (size,)).fetchall()
        if not rows:
            with self._lock:
                self.depth = 0  # someone else emptied it (cannot happen in one process; be safe)
            return True
        batch: list[dict[str, str]] = []
        for row_id, text in rows:
            try:
                batch.append(json.loads(text))
            except ValueError:
                log.error("outbox %s: row %d is not JSON, skipped: %.200r", self.path, row_id, text)
        try:
            if batch:
                self._xadd(batch)
        except Exception as exc:
            with self._lock:
                self._went_down(exc)
            return False
        # A crash right here sends this batch again at the next start (at-least-once; consumers dedupe).
        with self._lock:
            if self._db is None:
                return True
            try:
                with self._db:
                    deleted = self._db.execute("DELETE FROM outbox WHERE id <= ?", (rows[-1][0],)).rowcount
            except sqlite3.Error:
                log.exception("outbox %s: sent rows not deleted (they will be sent again)", self.path)
                return False
            self.depth = max(0, self.depth - deleted)
            self.drained += len(batch)
            if self._down:
                self._down = False
                log.info("Redis takes alerts again: sending the %d in the outbox %s", self.depth, self.path)
        return True

    def _xadd(self, batch: list[dict[str, str]]) -> None:
        """Add the batch to the stream (an alert only once: `AlertBus.add`)."""
        if len(batch) == 1:
            self.bus.add(self._client, batch[0])
            return
        pipe = self._client.pipeline(transaction=False)
        for fields in batch:
            self.bus.add(pipe, fields)
        pipe.execute()

    def _went_down(self, exc: Exception) -> None:
        if not self._down:
            self._down = True
            log.warning(
                "Redis does not take alerts (%s): queued in the outbox %s until it does", exc, self.path
            )


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=10, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # WAL + FULL: a committed append survives a power cut too
    db.execute(
        "CREATE TABLE IF NOT EXISTS outbox"
        " (id INTEGER PRIMARY KEY, fields TEXT NOT NULL, queued_at REAL NOT NULL)"
    )
    db.commit()
    return db


def _alert_id(text: str) -> str:
    try:
        return str(json.loads(text).get("alert_id", "?"))
    except (ValueError, AttributeError):
        return "?"
