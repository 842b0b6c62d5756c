"""The packet ring: the last seconds of compressed video of one camera, the pre-roll of every clip."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RingPacket:
    """One compressed video packet, detached from the demuxer (plain bytes and timestamps)."""

    data: bytes
    pts: int
    dts: int | None
    is_keyframe: bool
    time_s: float  # pts in seconds since the stream's first packet of this connection
    connection: int  # which connection of the source produced it


class PacketRing:
    """Holds packets covering at least `seconds` of stream time; starts at a keyframe whenever it can."""

    def __init__(self, seconds: float, max_packets: int = 10_000) -> None:
        if seconds <= 0:
            raise ValueError("ring length must be positive")
        self.seconds = seconds
        self._packets: deque[RingPacket] = deque(maxlen=max_packets)
        self._lock = threading.Lock()

    def append(self, packet: RingPacket) -> None:
        with self._lock:
            if self._packets and self._packets[-1].connection != packet.connection:
                self._packets.clear()
            self._packets.append(packet)
            self._trim()

    def _trim(self) -> None:
        # Drop whole GOPs from the front while the rest still covers `seconds`.
        newest = self._packets[-1].time_s
        while len(self._packets) > 1:
            next_key = next((i for i, p in enumerate(self._packets) if i > 0 and p.is_keyframe), None)
            if next_key is None or newest - self._packets[next_key].time_s < self.seconds:
                break
            for _ in range(next_key):
                self._packets.popleft()

    def clear(self) -> None:
        with self._lock:
            self._packets.clear()

    def __len__(self) -> int:
        return len(self._packets)

    def snapshot(self) -> list[RingPacket]:
        with self._lock:
            return list(self._packets)

    def since_last_keyframe(self, connection: int) -> list[RingPacket]:
        """Packets from the newest keyframe of `connection` to the newest packet."""
        packets = [p for p in self.snapshot() if p.connection == connection]
        for i in range(len(packets) - 1, -1, -1):
            if packets[i].is_keyframe:
                return packets[i:]
        return []

    def since_keyframe_near(self, time_s: float, connection: int) -> list[RingPacket]:
        """Packets from the keyframe closest to `time_s` (the earlier one on a tie) to the newest."""
        packets = [p for p in self.snapshot() if p.connection == connection]
        keys = [i for i, p in enumerate(packets) if p.is_keyframe]
        if not keys:
            return []
        best = min(keys, key=lambda i: (abs(packets[i].time_s - time_s), packets[i].time_s))
        return packets[best:]
