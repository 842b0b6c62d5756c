"""LeaseKeeper: one worker's side of the cluster. Each tick it heartbeats, reads the live workers and the
enabled cameras, computes the assignment, and makes its leases follow it.

A tick, in this order (so that a camera is never owned twice, and is unowned as briefly as possible):

1. leases whose local deadline passed (not renewed in time: Redis unreachable, the process stalled) are
   dropped, `on_lost` first;
2. heartbeat, which also returns the live workers (one round trip);
3. the assignment of the current cameras to those workers (`assign`, cached while nothing changes);
4. leases no longer assigned here: `on_lost`, then release (the new owner takes it on its next tick);
5. leases due (older than a third of the TTL) are renewed; those that are not ours any more: `on_lost`;
6. assigned cameras not held yet are acquired, never beyond the capacity: `on_acquired(camera, token)`.
   A camera still leased by another worker (handover, or its owner just died) is tried again next tick.

Cold start (`settle_s`): a worker that just joined acquires nothing until the live workers have stayed the
same for `settle_s` (or `settle_max_s` has passed since its first tick). When a whole fleet starts, the first
worker up would otherwise take a full load of cameras that belong to workers a second behind it, and hand
them over again as they appear: every camera started twice. While settling it publishes its capacity negated
(`Membership.settling`): the others count it in the assignment but keep, and go on renewing, the cameras it
is given until it has settled, so a worker joining a running cluster leaves no camera unowned meanwhile.

A lease counts as owned locally until `deadline`: the moment its renewal request was *sent* plus 90 % of
the TTL. Redis starts the TTL when it *receives* the request, so the local belief always ends first (the
10 % covers clock-rate differences). `owned()` never returns a lease past its deadline, and the runner
has a thread that wakes at the earliest deadline to call `on_lost`, even while a tick hangs on a Redis that
does not answer.

Timing: workers tick every `tick_s` (default min(TTL / 3, 1 s)); a worker's heartbeat runs out `worker_ttl_ms`
(default the lease TTL) after its last tick. When a worker dies its cameras are re-owned at most about
max(worker TTL, lease TTL) + one tick later: under TTL + 2 s with the defaults.

`on_lost` must stop the camera's work before it returns where it can (on a voluntary release the lease is
deleted right after it, and another worker may start at once); fenced writes catch what slips through
(the lease checked in Redis with each camera state, the token in the database with each alert).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis

from gridwatch.cluster.assignment import DEFAULT_BALANCE, Assignment, assign
from gridwatch.cluster.keys import DEFAULT_KEYS, ClusterKeys
from gridwatch.cluster.leases import LeaseStore
from gridwatch.cluster.membership import Membership

log = logging.getLogger(__name__)

_LOCAL_SHARE = 0.9  # a lease counts as ours for this share of its TTL after the renewal was sent

CameraSource = Callable[[], Iterable[str]]
AcquiredCallback = Callable[[str, int], None]
LostCallback = Callable[[str], None]


@dataclass(slots=True)
class _Held:
    token: int
    renewed_at: float  # clock() when the latest acquire/renew was sent
    deadline: float  # renewed_at + 90 % of the TTL


@dataclass(frozen=True, slots=True)
class TickReport:
    """What one tick saw and did (for logs, metrics and tests)."""

    live_workers: int
    cameras: int  # cameras the source gave (the previous list if it failed)
    assigned: int  # cameras the assignment gives this worker
    owned: int  # leases held after the tick
    acquired: tuple[str, ...]
    released: tuple[str, ...]  # no longer assigned here: given up
    lost: tuple[str, ...]  # not renewed in time, or taken by another worker
    renewed: int
    waiting: int  # assigned here but still leased by another worker
    unassigned: int  # cameras no worker has room for


class LeaseKeeper:
    def __init__(
        self,
        client: redis.Redis,
        worker_id: str,
        capacity: int,
        cameras: CameraSource,
        *,
        lease_ttl_ms: int = 10_000,
        worker_ttl_ms: int | None = None,
        tick_s: float | None = None,
        balance: float = DEFAULT_BALANCE,
        keys: ClusterKeys = DEFAULT_KEYS,
        on_acquired: AcquiredCallback | None = None,
        on_lost: LostCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
        info: dict[str, Any] | None = None,
        settle_s: float = 0.0,
        settle_max_s: float | None = None,
        replicas: int = 0,
        replica_timeout_ms: int = 100,
    ) -> None:
        if replicas < 0 or replica_timeout_ms < 1:
            raise ValueError(
                f"replicas ({replicas}) must be >= 0 and replica_timeout_ms ({replica_timeout_ms}) >= 1"
            )
        if settle_s < 0 or (settle_max_s is not None and settle_max_s < settle_s):
            raise ValueError(f"settle_s ({settle_s}) must be >= 0 and settle_max_s ({settle_max_s}) >= it")
        if lease_ttl_ms < 30:
            raise ValueError(f"lease_ttl_ms must be at least 30, not {lease_ttl_ms}")
        worker_ttl_ms = worker_ttl_ms or lease_ttl_ms
        tick_s = tick_s if tick_s is not None else min(lease_ttl_ms / 3000, 1.0)
        if not 0 < tick_s * 3000 <= min(lease_ttl_ms, worker_ttl_ms):
            raise ValueError(
                f"tick_s ({tick_s}) must be positive and at most a third of the lease TTL "
                f"({lease_ttl_ms} ms) and of the worker TTL ({worker_ttl_ms} ms): leases and heartbeats "
                "would lapse between ticks"
            )
        self.worker_id = worker_id
        self.capacity = capacity
        self.cameras = cameras
        self.lease_ttl_ms = lease_ttl_ms
        self.tick_s = tick_s
        self.renew_every_s = lease_ttl_ms / 3000
        self.balance = balance
        self.on_acquired = on_acquired
        self.on_lost = on_lost
        self.clock = clock
        self.settle_s = settle_s
        self.settle_max_s = settle_max_s if settle_max_s is not None else 10 * settle_s
        self.settled = settle_s == 0  # until then (a cold start) nothing is acquired
        self._first_tick: float | None = None
        self._live_seen: frozenset[str] | None = None
        self._live_since = 0.0
        self.membership = Membership(client, worker_id, capacity, ttl_ms=worker_ttl_ms, keys=keys, info=info)
        self.membership.settling = settle_s > 0
        self.store = LeaseStore(client, keys, replicas=replicas, replica_timeout_ms=replica_timeout_ms)
        self._unconfirmed_warned = float("-inf")  # the first warning is never held back
        self.assignment: Assignment | None = None  # the latest one computed
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._last_cameras: frozenset[str] | None = None
        self._unassigned_warned = 0
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- state ----------------------------------------------------------------------------------
    def owned(self) -> dict[str, int]:
        """{camera: fencing token} of the leases held now (none past its local deadline)."""
        now = self.clock()
        with self._lock:
            return {c: h.token for c, h in self._held.items() if h.deadline > now}

    def token(self, camera_id: str) -> int | None:
        """The fencing token of the camera's lease if it is held now (not past its local deadline): what
        `owned().get(camera_id)` gives, without copying every lease (called per frame and per write)."""
        now = self.clock()
        with self._lock:
            held = self._held.get(camera_id)
            return held.token if held is not None and held.deadline > now else None

    def held_until(self) -> dict[str, float]:
        """{camera: local deadline on `clock`} of the leases held now: when each lapses if not renewed."""
        now = self.clock()
        with self._lock:
            return {c: h.deadline for c, h in self._held.items() if h.deadline > now}

    def set_capacity(self, capacity: int) -> None:
        """A new (measured) capacity, published with the next heartbeat."""
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, not {capacity}")
        self.capacity = capacity

    # -- one step -------------------------------------------------------------------------------
    def tick(self) -> TickReport:
        """One step, as described in the module docstring. Redis errors propagate (after step 1); the
        state stays consistent, and the next tick carries on."""
        lost = self.expire_overdue()
        if not self.membership.registered:
            self.membership.register()
        published = self.membership.heartbeat(self.capacity)
        settling = {w for w, c in published.items() if c < 0 and w != self.worker_id}
        live = {w: abs(c) for w, c in published.items()}
        live[self.worker_id] = self.capacity  # ours is fresh even if the list was read a moment early
        self._settle(frozenset(live))
        cameras = self._current_cameras()
        if cameras is None:  # no camera list yet: keep what is held, take nothing new
            assignment = Assignment.empty()
            mine = frozenset(self._held)
        else:
            assignment = assign(cameras, live, self.balance)
            self.assignment = assignment
            self._warn_unassigned(assignment)
            mine = assignment.cameras_of(self.worker_id)

        # kept for a worker still settling: it takes them once it has settled (no camera unowned meanwhile)
        kept = {c for c in set(self._held) - mine if assignment.owners.get(c) in settling}
        released = self._release(set(self._held) - mine - kept)

        now = self.clock()
        due_after = now - self.renew_every_s + self.tick_s / 2  # renew a little early, not a tick late
        with self._lock:
            due = {c: h.token for c, h in self._held.items() if h.renewed_at <= due_after}
        renewed: set[str] = set()
        unconfirmed: set[str] = set()
        if due:
            sent = self.clock()
            renewal = self.store.renew_leases(self.worker_id, due, self.lease_ttl_ms)
            renewed, unconfirmed = renewal.renewed, renewal.unconfirmed
            with self._lock:
                for camera in renewed:
                    if camera in self._held:
                        self._held[camera].renewed_at = sent
                        self._held[camera].deadline = sent + self._local_ttl_s
            # not confirmed by the replicas: still ours in Redis, but trusted only until the deadline of
            # the last confirmed renewal (a failover could lose the extension)
            lost += self._drop(sorted(set(due) - renewed - unconfirmed))

        with self._lock:
            room = max(0, self.capacity - len(self._held)) if self.settled else 0
            wanted = sorted(mine - self._held.keys())
        acquired: list[str] = []
        waiting = 0
        if wanted and room:
            sent = self.clock()
            got = self.store.acquire(self.worker_id, wanted[:room], self.lease_ttl_ms)
            waiting = len(got.held_by_others) + len(got.unconfirmed)  # taken again at the next tick
            unconfirmed |= set(got.unconfirmed)
            with self._lock:
                for camera, token in got.tokens.items():
                    self._held[camera] = _Held(token, sent, sent + self._local_ttl_s)
            for camera in sorted(got.tokens):
                acquired.append(camera)
                self._notify(self.on_acquired, camera, got.tokens[camera])
        if unconfirmed:
            self._warn_unconfirmed(len(unconfirmed))
        return TickReport(
            live_workers=len(live),
            cameras=len(cameras or ()),
            assigned=len(mine),
            owned=len(self._held),
            acquired=tuple(acquired),
            released=tuple(released),
            lost=tuple(lost),
            renewed=len(renewed),
            waiting=waiting + max(0, len(wanted) - room),
            unassigned=len(assignment.unassigned),
        )

    def _warn_unconfirmed(self, count: int) -> None:
        now = self.clock()
        if now - self._unconfirmed_warned >= 30:
            self._unconfirmed_warned = now
            log.warning(
                "%d lease writes were not confirmed by %d Redis replica(s) within %d ms: those cameras are "
                "not started, or stop at their last confirmed deadline (check the replicas' link)",
                count, self.store.replicas, self.store.replica_timeout_ms,
            )  # fmt: skip

    def _settle(self, live: frozenset[str]) -> None:
        """Cold start: settled once the live workers stayed the same for `settle_s`, or after
        `settle_max_s`."""
        if self.settled:
            return
        now = self.clock()
        if self._first_tick is None:
            self._first_tick = now
        if live != self._live_seen:
            self._live_seen, self._live_since = live, now
        if now - self._live_since >= self.settle_s or now - self._first_tick >= self.settle_max_s:
            self.settled = True
            self.membership.settling = False  # the next heartbeat says so
            log.info("%s: %d live workers, unchanged for %.1f s: taking cameras", self.worker_id, len(live),
                     now - self._live_since)  # fmt: skip

    def expire_overdue(self) -> list[str]:
        """Drop the leases past their local deadline (calling `on_lost`); the cameras dropped."""
        now = self.clock()
        with self._lock:
            overdue = sorted(c for c, h in self._held.items() if h.deadline <= now)
        return self._drop(overdue)

    def give_up(self, camera_id: str) -> bool:
        """Release one lease now (`on_lost` first); the camera may come back with a new token at the next
        tick. False if it was not held."""
        return bool(self._release({camera_id}))

    def release_all(self) -> None:
        """Give up every lease (`on_lost` first): a clean shutdown, so others take over at once."""
        self._release(set(self._held))

    # -- thread runner --------------------------------------------------------------------------
    def start(self) -> None:
        """Register (raises `WorkerIdInUse` or a Redis error here, not in a thread), then tick every
        `tick_s` in a daemon thread until `stop()`. A second thread calls `on_lost` at each lease's local
        deadline, even while a tick hangs on a Redis that does not answer."""
        if self._threads:
            raise RuntimeError("LeaseKeeper already started")
        self.membership.register()
        self._stopping.clear()
        self._threads = [
            threading.Thread(target=self._run, name=f"lease-keeper-{self.worker_id}", daemon=True),
            threading.Thread(target=self._watch, name=f"lease-deadlines-{self.worker_id}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, release: bool = True, timeout: float = 10.0) -> None:
        """Stop ticking; with `release`, give up every lease and deregister (Redis errors are logged:
        the leases then expire by themselves)."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        if not release:
            return
        try:
            self.release_all()
            self.membership.deregister()
        except redis.RedisError as exc:
            log.warning("%s: could not release leases on shutdown (%s); they expire by themselves",
                        self.worker_id, exc)  # fmt: skip
            self._drop(sorted(self._held))

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            started = self.clock()
            try:
                self.tick()
                if failures:
                    log.info("%s: Redis answers again (after %d failed ticks)", self.worker_id, failures)
                failures = 0
            except redis.RedisError as exc:
                failures += 1
                if failures == 1:
                    log.warning("%s: lease tick failed (%s); leases lapse at their deadline if this lasts",
                                self.worker_id, exc)  # fmt: skip
            except Exception:
                failures += 1
                log.exception("%s: lease tick failed", self.worker_id)
            self._stopping.wait(max(0.0, started + self.tick_s - self.clock()))

    def _watch(self) -> None:
        """Wake at the earliest local deadline (or each tick, for leases taken meanwhile) and drop the
        overdue ones."""
        while not self._stopping.is_set():
            self.expire_overdue()
            now = self.clock()
            with self._lock:
                wake = min([now + self.tick_s, *(h.deadline for h in self._held.values())])
            self._stopping.wait(max(0.0, wake - now))

    # -- internals ------------------------------------------------------------------------------
    @property
    def _local_ttl_s(self) -> float:
        return self.lease_ttl_ms / 1000 * _LOCAL_SHARE

    def _current_cameras(self) -> frozenset[str] | None:
        try:
            cameras = frozenset(self.cameras())
        except Exception:
            if self._last_cameras is None:
                log.exception("%s: no camera list yet; renewing current leases only", self.worker_id)
                return None
            log.warning("%s: the camera list is unavailable; using the previous one", self.worker_id,
                        exc_info=True)  # fmt: skip
            return self._last_cameras
        self._last_cameras = cameras
        return cameras

    def _release(self, cameras: set[str]) -> list[str]:
        if not cameras:
            return []
        ordered = sorted(cameras)
        with self._lock:
            tokens = {c: self._held.pop(c).token for c in ordered if c in self._held}
        for camera in tokens:
            self._notify(self.on_lost, camera)
        self.store.release(self.worker_id, tokens)
        return list(tokens)

    def _drop(self, cameras: list[str]) -> list[str]:
        dropped = []
        with self._lock:
            for camera in cameras:
                if self._held.pop(camera, None) is not None:
                    dropped.append(camera)
        for camera in dropped:
            self._notify(self.on_lost, camera)
        return dropped

    def _notify(self, callback: Callable[..., None] | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            log.exception("%s: lease callback %s%r failed", self.worker_id, callback, args)

    def _warn_unassigned(self, assignment: Assignment) -> None:
        count = len(assignment.unassigned)
        if count and count != self._unassigned_warned:
            log.warning("%d cameras have no worker with room (live capacity too small)", count)
        self._unassigned_warned = count
