"""Camera stream states and the transitions between them, written down once and enforced."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

log = logging.getLogger(__name__)


class StreamState(StrEnum):
    CONNECTING = "connecting"  # first connection attempt since start
    ONLINE = "online"  # packets are arriving
    STALLED = "stalled"  # connected, but no packet for `stall_after_s`
    OFFLINE = "offline"  # disconnected; reconnect attempts stay in this state
    AUTH_FAILED = "auth_failed"  # the camera refused the credentials; retried slowly
    UNSUPPORTED = "unsupported"  # no video track, or a codec FFmpeg cannot decode
    STOPPED = "stopped"  # the source was stopped (terminal)


S = StreamState
LEGAL_TRANSITIONS: dict[StreamState, frozenset[StreamState]] = {
    S.CONNECTING: frozenset({S.ONLINE, S.OFFLINE, S.AUTH_FAILED, S.UNSUPPORTED, S.STOPPED}),
    S.ONLINE: frozenset({S.STALLED, S.OFFLINE, S.UNSUPPORTED, S.STOPPED}),
    S.STALLED: frozenset({S.ONLINE, S.OFFLINE, S.STOPPED}),
    S.OFFLINE: frozenset({S.ONLINE, S.AUTH_FAILED, S.UNSUPPORTED, S.STOPPED}),
    S.AUTH_FAILED: frozenset({S.ONLINE, S.OFFLINE, S.UNSUPPORTED, S.STOPPED}),
    S.UNSUPPORTED: frozenset({S.ONLINE, S.OFFLINE, S.AUTH_FAILED, S.STOPPED}),
    S.STOPPED: frozenset(),
}


class IllegalTransition(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class StateChange:
    """One change of a camera's stream state; `reason` is already redacted."""

    camera_id: str
    stream: str  # "detect" or "record"
    old: StreamState
    new: StreamState
    at: float  # wall clock, time.time()
    reason: str | None = None


class StateMachine:
    """The state of one stream; `move` to the same state is a no-op, an illegal move raises."""

    def __init__(
        self,
        camera_id: str,
        stream: str = "detect",
        listener: Callable[[StateChange], None] | None = None,
    ) -> None:
        self.camera_id = camera_id
        self.stream = stream
        self._state = StreamState.CONNECTING
        self._since = time.time()
        self._listener = listener
        self._lock = threading.Lock()

    @property
    def state(self) -> StreamState:
        return self._state

    @property
    def since(self) -> float:
        return self._since

    def move(self, new: StreamState, reason: str | None = None) -> StateChange | None:
        with self._lock:
            old = self._state
            if new == old:
                return None
            if new not in LEGAL_TRANSITIONS[old]:
                raise IllegalTransition(f"camera {self.camera_id}: {old} -> {new} is not a legal transition")
            self._state = new
            self._since = time.time()
            change = StateChange(self.camera_id, self.stream, old, new, self._since, reason)
        log.info(
            "camera %s %s stream: %s -> %s%s",
            self.camera_id,
            self.stream,
            old,
            new,
            f" ({reason})" if reason else "",
        )
        if self._listener is not None:
            try:
                self._listener(change)
            except Exception:
                log.exception("state listener failed for camera %s", self.camera_id)
        return change
