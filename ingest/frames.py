"""Frames handed from a camera source to the detector, and the newest-wins slot between them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Box = tuple[float, float, float, float]  # x0, y0, x1, y1


@dataclass(frozen=True, slots=True)
class MotionResult:
    """What a camera's motion function saw: whether anything moved, and where (normalised 0..1 boxes)."""

    moving: bool
    regions: tuple[Box, ...] = ()


# Handed in by the worker (ingest never imports detect); a plain bool means "moved, region unknown".
MotionFunction = Callable[[np.ndarray], "bool | MotionResult"]


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded, sampled frame of one camera."""

    camera_id: str
    image: np.ndarray  # BGR, HxWx3 uint8
    time_s: float  # stream time since the first packet of this connection
    captured_at: float  # wall clock (time.time()) when the packet arrived
    connection: int
    seq: int
    motion: bool = True  # False: the camera's motion function saw nothing move (True when there is none)
    regions: tuple[Box, ...] = ()  # where it moved, normalised (0..1) boxes; empty: unknown or nothing


class FrameSlot:
    """Holds only the newest frame: a slow detector never builds a backlog, it skips (and counts) frames."""

    def __init__(self) -> None:
        self._frame: Frame | None = None
        self._cond = threading.Condition()
        self._listeners: list[threading.Event] = []
        self._captures: list[Callable[[Frame], object]] = []
        self.dropped = 0
        self.delivered = 0

    def listen(self, event: threading.Event) -> None:
        """Set `event` whenever a frame is put (one detector waits on one event for all its cameras)."""
        with self._cond:
            if event not in self._listeners:
                self._listeners.append(event)

    def capture_next(self, callback: Callable[[Frame], object]) -> None:
        """Call `callback` once with the next frame put (on the putting thread: it must be quick), beside
        its normal delivery. The frame is shared: the callback must not change it."""
        with self._cond:
            self._captures.append(callback)

    def cancel_capture(self, callback: Callable[[Frame], object]) -> None:
        """Forget a `capture_next` callback that has not been called yet (no error when it has)."""
        with self._cond:
            if callback in self._captures:
                self._captures.remove(callback)

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._cond.notify_all()
            for event in self._listeners:
                event.set()
            captures, self._captures = self._captures, []
        for callback in captures:
            callback(frame)

    def take(self) -> Frame | None:
        """The pending frame, if any, without waiting."""
        with self._cond:
            frame, self._frame = self._frame, None
            if frame is not None:
                self.delivered += 1
            return frame

    def wait(self, timeout: float) -> Frame | None:
        with self._cond:
            if self._frame is None:
                self._cond.wait(timeout)
            frame, self._frame = self._frame, None
            if frame is not None:
                self.delivered += 1
            return frame
