from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from ingest.clip import ClipWriter
from ingest.ring import PacketRing, RingPacket


@pytest.fixture(scope="module")
def h264_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 s of 320x240 H.264 at 10 fps, keyframe every 10 frames, in MPEG-TS (time base 1/90000 like RTSP)."""
    path = tmp_path_factory.mktemp("clip") / "source.ts"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10, options={"g": "10", "keyint_min": "10", "bf": "0"})
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(120):
            image = np.full((240, 320, 3), (i * 2) % 255, np.uint8)
            image[:, (i * 3) % 320 :] = 40
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = i
            frame.time_base = Fraction(1, 10)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _ring_from(path: Path) -> tuple[PacketRing, list[RingPacket]]:
    ring = PacketRing(seconds=30)
    packets: list[RingPacket] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        first = None
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            first = packet.pts if first is None else first
            rp = RingPacket(
                bytes(packet),
                packet.pts,
                packet.dts,
                packet.is_keyframe,
                float((packet.pts - first) * stream.time_base),
                1,
            )
            ring.append(rp)
            packets.append(rp)
    return ring, packets


def test_clip_from_keyframe_remuxed_without_reencoding(h264_file: Path, tmp_path: Path) -> None:
    ring, _ = _ring_from(h264_file)
    selected = [p for p in ring.since_keyframe_near(3.2, 1) if p.time_s < 9.0]
    with av.open(str(h264_file)) as container:
        writer = ClipWriter(tmp_path / "clip.mp4", container.streams.video[0])
        for packet in selected:
            writer.write(packet)
        result = writer.close()
    assert result.error is None and result.path is not None
    assert result.codec == "h264"
    assert result.duration_s == pytest.approx(6.0, abs=0.11)  # 3.0 s keyframe .. 8.9 s + one frame
    with av.open(str(result.path)) as clip:
        stream = clip.streams.video[0]
        frames = list(clip.decode(stream))
        assert len(frames) == 60
        assert (frames[0].width, frames[0].height) == (320, 240)
        assert float(clip.duration / 1_000_000) == pytest.approx(6.0, abs=0.11)
    # the bytes of each packet are the input's: no re-encode
    with av.open(str(result.path)) as clip:
        remuxed = [bytes(p) for p in clip.demux(clip.streams.video[0]) if p.size]
    assert remuxed[5] == selected[5].data or remuxed[5].endswith(selected[5].data[-16:])


def test_clip_skips_packets_until_a_keyframe(h264_file: Path, tmp_path: Path) -> None:
    _, packets = _ring_from(h264_file)
    with av.open(str(h264_file)) as container:
        writer = ClipWriter(tmp_path / "clip.mp4", container.streams.video[0])
        for packet in packets[3:25]:
            writer.write(packet)
        result = writer.close()
    assert result.packets == 15  # from the keyframe at packet 10


def test_clip_without_keyframe_is_an_error_not_a_file(h264_file: Path, tmp_path: Path) -> None:
    _, packets = _ring_from(h264_file)
    with av.open(str(h264_file)) as container:
        writer = ClipWriter(tmp_path / "clip.mp4", container.streams.video[0])
        for packet in packets[1:5]:
            writer.write(packet)
        result = writer.close()
    assert result.path is None and result.error
    assert not (tmp_path / "clip.mp4").exists()
