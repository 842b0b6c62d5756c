from __future__ import annotations

from ingest.ring import PacketRing, RingPacket


def _packet(i: int, fps: int = 10, gop: int = 10, connection: int = 1) -> RingPacket:
    return RingPacket(
        data=bytes([i % 256]) * 10,
        pts=i * 9000,
        dts=i * 9000,
        is_keyframe=i % gop == 0,
        time_s=i / fps,
        connection=connection,
    )


def test_ring_keeps_at_least_its_length_and_starts_at_a_keyframe() -> None:
    ring = PacketRing(seconds=3.0)
    for i in range(100):
        ring.append(_packet(i))
    packets = ring.snapshot()
    assert packets[0].is_keyframe
    assert packets[-1].time_s - packets[0].time_s >= 3.0
    assert packets[-1].time_s - packets[0].time_s < 3.0 + 1.0 + 1e-9  # never more than one extra GOP


def test_keyframe_nearest_the_requested_time() -> None:
    ring = PacketRing(seconds=5.0)
    for i in range(80):
        ring.append(_packet(i))
    # keyframes every 1.0 s; 5.4 s is nearest to the 5.0 s keyframe, 5.6 s to 6.0 s
    assert ring.since_keyframe_near(5.4, connection=1)[0].time_s == 5.0
    assert ring.since_keyframe_near(5.6, connection=1)[0].time_s == 6.0
    assert ring.since_keyframe_near(5.6, connection=1)[-1].time_s == 7.9


def test_a_new_connection_empties_the_ring() -> None:
    ring = PacketRing(seconds=5.0)
    for i in range(30):
        ring.append(_packet(i, connection=1))
    ring.append(_packet(0, connection=2))
    assert len(ring) == 1
    assert ring.since_keyframe_near(0.0, connection=1) == []
