"""Camera simulator: an RTSP server of test media and synthetic events (procedural flames)."""
