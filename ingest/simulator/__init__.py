"""Camera simulator: an RTSP server of test media and synthetic events (procedural flames)."""

from ingest.simulator.server import Mount, RtspSimulator

__all__ = ["Mount", "RtspSimulator"]
