"""Prometheus metrics of a running GridWatch, read from the live parts at scrape time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ingest.state import StateChange, StreamState

if TYPE_CHECKING:
    from detect.loop import DetectorLoop
    from ingest.frames import FrameSlot
    from ingest.source import CameraSource
    from storage.spool import SpoolStats


class RuntimeCollector(Collector):
    def __init__(
        self,
        sources: Mapping[str, CameraSource],
        slots: Mapping[str, FrameSlot],
        loop: Callable[[], DetectorLoop | None],
        alerts_by_label: Callable[[], Mapping[str, int]],
        spool: Callable[[], SpoolStats | None] | None = None,
        retention: Callable[[], Mapping[str, int] | None] | None = None,
        best_frames_flushed: Callable[[], int | None] | None = None,
    ) -> None:
        self.sources = sources
        self.slots = slots
        self.loop = loop
        self.alerts_by_label = alerts_by_label
        self.spool = spool
        self.retention = retention
        self.best_frames_flushed = best_frames_flushed
        self.state_changes: Counter[tuple[str, str, str]] = Counter()

    def on_state(self, change: StateChange) -> None:
        self.state_changes[(change.camera_id, change.stream, str(change.new))] += 1

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        labels = ["camera", "stream"]
        state = GaugeMetricFamily(
            "gridwatch_camera_state", "1 for the stream's current state", labels=[*labels, "state"]
        )
        fps = GaugeMetricFamily("gridwatch_camera_input_fps", "Packets per second received", labels=labels)
        decoded = GaugeMetricFamily(
            "gridwatch_camera_decoded_fps", "Frames per second decoded", labels=labels
        )
        bitrate = GaugeMetricFamily("gridwatch_camera_bitrate_kbps", "Received bitrate", labels=labels)
        age = GaugeMetricFamily(
            "gridwatch_camera_last_packet_age_seconds", "Since the last packet", labels=labels
        )
        reconnects = CounterMetricFamily("gridwatch_camera_reconnects", "Reconnect attempts", labels=labels)
        wakes = CounterMetricFamily(
            "gridwatch_camera_bitstream_wakes",
            "Idle P-frames large enough to switch the camera to full decode",
            labels=labels,
        )
        for camera_id, source in self.sources.items():
            for role, health in source.health().items():
                for s in StreamState:
                    state.add_metric([camera_id, role, str(s)], 1.0 if health.state == s else 0.0)
                fps.add_metric([camera_id, role], health.input_fps)
                decoded.add_metric([camera_id, role], health.decoded_fps)
                bitrate.add_metric([camera_id, role], health.bitrate_kbps)
                if health.last_packet_age_s is not None:
                    age.add_metric([camera_id, role], health.last_packet_age_s)
                reconnects.add_metric([camera_id, role], health.reconnects)
                wakes.add_metric([camera_id, role], health.bitstream_wakes)
        yield from (state, fps, decoded, bitrate, age, reconnects, wakes)

        changes = CounterMetricFamily(
            "gridwatch_camera_state_changes", "State changes by new state", labels=[*labels, "state"]
        )
        for (camera_id, role, new), count in sorted(self.state_changes.items()):
            changes.add_metric([camera_id, role, new], count)
        yield changes

        dropped = CounterMetricFamily(
            "gridwatch_frames_dropped",
            "Frames replaced in the latest-frame slot before the detector took them",
            labels=["camera"],
        )
        taken = CounterMetricFamily(
            "gridwatch_frames_taken",
            "Frames the detector took from the camera's latest-frame slot, run or skipped as still "
            "(its rate: the camera's detect fps)",
            labels=["camera"],
        )
        for camera_id, slot in self.slots.items():
            dropped.add_metric([camera_id], slot.dropped)
            taken.add_metric([camera_id], slot.delivered)
        yield dropped
        yield taken

        loop = self.loop()
        if loop is not None:
            yield CounterMetricFamily(
                "gridwatch_detector_frames", "Frames run through the detectors", value=loop.stats.frames
            )
            yield CounterMetricFamily(
                "gridwatch_detector_busy_seconds", "Time spent in the detectors", value=loop.stats.busy_s
            )
            yield CounterMetricFamily(
                "gridwatch_detector_errors", "Detector failures", value=loop.stats.errors
            )
            yield GaugeMetricFamily(
                "gridwatch_detector_latency_seconds",
                "Capture to detection of the last frame",
                value=loop.stats.last_latency_s,
            )
            recent = sorted(loop.stats.latencies_s)
            if recent:
                quantiles = GaugeMetricFamily(
                    "gridwatch_detector_latency_quantile_seconds",
                    "Capture to detection over the last frames run (up to 2000)",
                    labels=["quantile"],
                )
                for q in (0.5, 0.95, 0.99):
                    quantiles.add_metric([str(q)], recent[min(len(recent) - 1, int(q * len(recent)))])
                yield quantiles
            yield CounterMetricFamily(
                "gridwatch_detector_still_skipped",
                "Frames of still cameras not run (refresh not due)",
                value=loop.stats.skipped_still,
            )
            yield CounterMetricFamily(
                "gridwatch_detector_unchanged_skipped",
                "Still refreshes put off because the picture had not changed",
                value=loop.stats.skipped_unchanged,
            )
            inputs = CounterMetricFamily(
                "gridwatch_detector_model_inputs", "Images given to the models", labels=["kind"]
            )
            inputs.add_metric(["whole"], loop.stats.model_inputs - loop.stats.crop_inputs)
            inputs.add_metric(["crop"], loop.stats.crop_inputs)
            yield inputs
        alerts = CounterMetricFamily("gridwatch_alerts", "Alerts raised", labels=["label"])
        for label, count in sorted(self.alerts_by_label().items()):
            alerts.add_metric([label], count)
        yield alerts
        flushed = self.best_frames_flushed() if self.best_frames_flushed is not None else None
        if flushed is not None:
            yield CounterMetricFamily(
                "gridwatch_best_frames_flushed",
                "Best frames of open events written out before their event ended, to stay within "
                "clips.best_frame_memory_mb",
                flushed,
            )
        yield from self._spool_metrics()
        yield from self._retention_metrics()

    def _retention_metrics(self) -> Iterable[CounterMetricFamily]:
        totals = self.retention() if self.retention is not None else None
        if totals is None:
            return
        yield CounterMetricFamily(
            "gridwatch_retention_sweeps", "Retention sweeps run", totals.get("sweeps", 0)
        )
        deleted = CounterMetricFamily(
            "gridwatch_retention_deleted", "Alerts deleted by retention", labels=["reason"]
        )
        deleted.add_metric(["age"], totals.get("deleted_by_age", 0))
        deleted.add_metric(["size"], totals.get("deleted_by_size", 0))
        yield deleted
        yield CounterMetricFamily(
            "gridwatch_retention_freed_bytes", "Bytes retention freed", totals.get("bytes_freed", 0)
        )
        yield CounterMetricFamily(
            "gridwatch_retention_errors",
            "Alerts kept because an object could not be deleted (retried at the next sweep)",
            totals.get("errors", 0),
        )
        skipped = CounterMetricFamily(
            "gridwatch_retention_skipped",
            "Alerts a rule would have deleted, kept because a clip, snapshot or thumbnail of theirs was not "
            "stored yet (still in a spool); counted at every sweep that keeps them",
            labels=["reason"],
        )
        skipped.add_metric(["age"], totals.get("skipped_by_age", 0))
        skipped.add_metric(["size"], totals.get("skipped_by_size", 0))
        yield skipped

    def _spool_metrics(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        stats = self.spool() if self.spool is not None else None
        if stats is None:
            return
        yield GaugeMetricFamily(
            "gridwatch_spool_items", "Clips and snapshots waiting for upload", stats.items
        )
        yield GaugeMetricFamily("gridwatch_spool_bytes", "Bytes waiting for upload in the spool", stats.bytes)
        yield CounterMetricFamily(
            "gridwatch_spool_uploads", "Uploads confirmed (read back, sha256 matched)", stats.uploads
        )
        yield CounterMetricFamily(
            "gridwatch_spool_upload_failures",
            "Failed upload attempts (retried ones included)",
            stats.upload_failures,
        )
        yield CounterMetricFamily(
            "gridwatch_spool_evictions",
            "Spooled items evicted, oldest first, to stay within the quota",
            stats.evictions,
        )
        yield CounterMetricFamily(
            "gridwatch_spool_write_failures",
            "Clips and snapshots the spool could not write (disk full or failing)",
            stats.write_failures,
        )


def make_registry(collector: RuntimeCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
