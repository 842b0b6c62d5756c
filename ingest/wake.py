"""A motion cue read off the compressed stream, so an idle camera can wake up without decoding.

An encoder spends few bits on a P-frame of a still scene (it predicts every block from the previous frame)
and many more when something moves: on the benchmark street a still P-frame is about 1.1 kB and one with
people walking 8 kB. While a camera decodes only keyframes, every P-frame's size is compared with the
median of the recent still P-frames; when two of the last three are `ratio` times larger (and at least
`min_extra_bytes` larger), the camera switches to full decode at once and the pixel motion gate decides
whether anything really moved. The cue only wakes the decoder: it never raises an alert, so a false wake
(noise at night, a change of bitrate) costs a short burst of decoding, and a motion too small to change the
frame sizes is still found on the keyframes the idle camera keeps decoding.
"""

from __future__ import annotations

from collections import deque
from statistics import median


class PacketSizeWake:
    """Feed it the sizes of an idle stream's non-key packets; it says when they suggest motion."""

    def __init__(
        self,
        ratio: float = 3.0,
        min_extra_bytes: int = 600,
        baseline_packets: int = 50,
        warmup_packets: int = 10,
    ) -> None:
        if ratio <= 1:
            raise ValueError(f"ratio must be above 1, got {ratio}")
        self.ratio = ratio
        self.min_extra_bytes = min_extra_bytes
        self.warmup_packets = warmup_packets
        self._still: deque[int] = deque(maxlen=baseline_packets)
        self._recent: deque[bool] = deque(maxlen=3)
        self._baseline: float | None = None
        self.wakes = 0

    @property
    def baseline(self) -> float | None:
        """Median size of the recent still packets (None until it has seen `warmup_packets`)."""
        return self._baseline

    def observe(self, size: int) -> bool:
        """True when this packet, with the two before it, looks like motion (the caller wakes up)."""
        if len(self._still) < self.warmup_packets:
            self._add_still(size)
            return False
        assert self._baseline is not None
        large = size > self._baseline * self.ratio and size - self._baseline >= self.min_extra_bytes
        self._recent.append(large)
        if not large:
            self._add_still(size)
            return False
        if sum(self._recent) >= 2:
            self._recent.clear()
            self.wakes += 1
            return True
        return False

    def reset(self) -> None:
        """Forget the recent run (after a switch of decode mode or a reconnect); the baseline stays."""
        self._recent.clear()

    def _add_still(self, size: int) -> None:
        self._still.append(size)
        if len(self._still) >= self.warmup_packets:
            self._baseline = float(median(self._still))
