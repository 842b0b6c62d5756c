"""From detections to stored, published alerts: rules -> row -> snapshot -> bus -> clip."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from alerts.bus import AlertBus, BusMessage
from alerts.evaluator import FrameEvaluator
from alerts.rules import RuleEngine, Trigger
from detect.annotate import draw_detections, encode_jpeg
from detect.detections import Detections
from detect.tracker import Track
from detect.zones import Zone
from ingest.clip import ClipResult
from ingest.frames import Frame
from ingest.source import ClipRequest
from storage.metadata import AlertRecord, MetadataDB
from storage.objectstore import ObjectStore
from storage.spool import Spool, SpoolItem

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CameraPlace:
    village: str
    grid: str


@dataclass(slots=True)
class OpenEvent:
    """An object that raised an alert and is still being tracked."""

    message: BusMessage
    best_score: float
    last_seen: float


class AlertPipeline:
    """Turns a frame's detections into alerts. Uploads never run in the detector thread.

    With a `spool` (what the runtime uses) every snapshot and clip goes through it: the alert is published
    at once with its (deterministic) snapshot key, and the database row and the `clip` bus message follow
    when the spool has confirmed the upload (`on_spool_stored`). Without one, snapshots and clips are uploaded
    directly and a failed clip upload is marked failed (kept for small tools and tests).
    """

    def __init__(
        self,
        rules: RuleEngine,
        bus: AlertBus,
        db: MetadataDB,
        store: ObjectStore,
        places: Mapping[str, CameraPlace],
        request_clip: Callable[[str, ClipRequest], None],
        pre_roll_s: float,
        post_roll_s: float,
        upload_workers: int = 2,
        zones: Mapping[str, Mapping[str, Zone]] | None = None,
        masks: Mapping[str, list[Zone]] | None = None,
        spool: Spool | None = None,
    ) -> None:
        self.rules = rules
        self.bus = bus
        self.db = db
        self.store = store
        self.spool = spool
        self.places = places
        self.request_clip = request_clip
        self.pre_roll_s = pre_roll_s
        self.post_roll_s = post_roll_s
        self._uploads = ThreadPoolExecutor(max_workers=upload_workers, thread_name_prefix="upload")
        self.evaluator = FrameEvaluator(rules, zones, masks)
        self.alerts_created = 0
        self.alerts_by_label: Counter[str] = Counter()
        self.events: dict[tuple[str, int], list[OpenEvent]] = {}  # (camera, track id) -> its alerts' events

    def handle(self, frame: Frame, detections: Detections) -> list[str]:
        """Track, evaluate the rules, return the ids of the alerts raised (called by the detector thread)."""
        detections, triggers = self.evaluator.evaluate(frame, detections)
        raised = [self._raise(frame, detections, trigger) for trigger in triggers]
        self._follow_events(frame.camera_id)
        return raised

    def _follow_events(self, camera_id: str) -> None:
        """Events start with their alert, follow their object's track, and end when the track does."""
        for track in self.evaluator.tracks:
            for event in self.events.get((camera_id, track.id), []):
                event.best_score = max(event.best_score, track.score)
                event.last_seen = track.last_seen
        for track in self.evaluator.ended:
            for event in self.events.pop((camera_id, track.id), []):
                self._end_event(event, track)

    def _end_event(self, event: OpenEvent, track: Track) -> None:
        duration = track.last_seen - track.first_seen
        log.info(
            "alert %s: the %s left or stopped being seen after %.1f s",
            event.message.alert_id,
            track.label,
            duration,
        )
        self._publish(
            dataclasses.replace(
                event.message,
                kind="ended",
                snapshot_key=None,
                bbox=track.box,
                frame_time=None,
                ended_at=datetime.fromtimestamp(track.last_seen, UTC).isoformat(),
                duration_s=duration,
                best_score=max(event.best_score, track.score),
            )
        )

    def close(self, wait: bool = True) -> None:
        self._uploads.shutdown(wait=wait)

    def _raise(self, frame: Frame, detections: Detections, trigger: Trigger) -> str:
        alert_id = uuid.uuid4().hex
        created_at = datetime.now(UTC)
        place = self.places[frame.camera_id]
        record = AlertRecord(
            id=alert_id,
            camera_id=frame.camera_id,
            village=place.village,
            grid=place.grid,
            label=trigger.label,
            score=trigger.score,
            bbox=trigger.bbox,
            created_at=created_at,
            frame_time=datetime.fromtimestamp(frame.captured_at, UTC),
            stream_time_s=frame.time_s,
            snapshot_key=None,
            clip_key=None,
            clip_status="pending",
            clip_duration_s=None,
            clip_error=None,
        )
        self.db.add_alert(record)
        self.alerts_created += 1
        self.alerts_by_label[trigger.label] += 1
        log.info(
            "alert %s: %s %.2f on camera %s (grid %s)",
            alert_id,
            trigger.label,
            trigger.score,
            frame.camera_id,
            place.grid,
        )
        snapshot_key = self._store_snapshot(frame, detections, alert_id, created_at)
        message = BusMessage(
            alert_id=alert_id,
            kind="alert",
            camera_id=frame.camera_id,
            village=place.village,
            grid=place.grid,
            label=trigger.label,
            score=trigger.score,
            created_at=created_at.isoformat(),
            snapshot_key=snapshot_key,
            bbox=trigger.bbox,
            frame_time=datetime.fromtimestamp(frame.captured_at, UTC).isoformat(),
        )
        self._publish(message)
        event = OpenEvent(message, trigger.score, frame.captured_at)
        self.events.setdefault((frame.camera_id, trigger.track_id), []).append(event)
        self.request_clip(
            frame.camera_id,
            ClipRequest(
                time_s=frame.time_s,
                connection=frame.connection,
                pre_roll_s=self.pre_roll_s,
                post_roll_s=self.post_roll_s,
                on_done=lambda result: self._uploads.submit(self._store_clip, message, result),
            ),
        )
        return alert_id

    def _store_snapshot(
        self, frame: Frame, detections: Detections, alert_id: str, created_at: datetime
    ) -> str | None:
        key = self.store.snapshot_key(frame.camera_id, created_at, alert_id)
        try:
            jpeg = encode_jpeg(draw_detections(frame.image, detections))
            if self.spool is not None:
                spooled = self.spool.put_bytes(
                    "snapshot",
                    key,
                    jpeg,
                    "image/jpeg",
                    alert_id=alert_id,
                    camera_id=frame.camera_id,
                    tags={"camera": frame.camera_id},
                )
                return key if spooled is not None else None  # the row gets the key once it is uploaded
            self.store.put_bytes(key, jpeg, "image/jpeg", tags={"camera": frame.camera_id})
            self.db.set_snapshot(alert_id, key)
            return key
        except Exception:
            log.exception("snapshot of alert %s (camera %s) not stored", alert_id, frame.camera_id)
            return None

    def _publish(self, message: BusMessage) -> None:
        try:
            self.bus.publish(message)
        except Exception:
            log.exception("alert %s not published to the bus (it is in the database)", message.alert_id)

    def _store_clip(self, message: BusMessage, result: ClipResult) -> None:
        alert_id = message.alert_id
        if result.path is None:
            log.warning("alert %s has no clip: %s", alert_id, result.error)
            self.db.set_clip(alert_id, key=None, status="failed", error=result.error)
            return
        key = self.store.clip_key(message.camera_id, datetime.fromisoformat(message.created_at), alert_id)
        if self.spool is not None:
            self._spool_clip(message, result, key)
            return
        try:
            self.store.put_file(
                key, result.path, "video/mp4", tags={"camera": message.camera_id, "label": message.label}
            )
        except Exception as exc:
            log.exception("clip of alert %s not uploaded", alert_id)
            self.db.set_clip(alert_id, key=None, status="failed", error=str(exc))
            return
        result.path.unlink(missing_ok=True)
        self.db.set_clip(alert_id, key=key, status="stored", duration_s=result.duration_s)
        log.info("clip of alert %s stored: %s (%.1f s)", alert_id, key, result.duration_s)
        self._publish(dataclasses.replace(message, kind="clip", clip_key=key, bbox=None, frame_time=None))

    # -- through the spool -------------------------------------------------------------------------
    def _spool_clip(self, message: BusMessage, result: ClipResult, key: str) -> None:
        assert self.spool is not None and result.path is not None
        try:
            item = self.spool.put_file(
                "clip",
                key,
                result.path,
                "video/mp4",
                alert_id=message.alert_id,
                camera_id=message.camera_id,
                tags={"camera": message.camera_id, "label": message.label},
                duration_s=result.duration_s,
            )
        finally:
            result.path.unlink(missing_ok=True)
        if item is None:
            self.db.set_clip(
                message.alert_id,
                key=None,
                status="failed",
                error="not spooled: the local disk is full or failing",
            )
            return
        log.info(
            "clip of alert %s spooled (%.1f s, %d bytes)", message.alert_id, result.duration_s, item.size
        )

    def on_spool_stored(self, item: SpoolItem) -> None:
        """The spool confirmed an upload: record it, and for a clip tell the bus."""
        if item.kind == "snapshot":
            self.db.set_snapshot(item.alert_id, item.key)
            return
        self.db.set_clip(item.alert_id, key=item.key, status="stored", duration_s=item.duration_s)
        log.info("clip of alert %s stored: %s (%.1f s)", item.alert_id, item.key, item.duration_s or 0.0)
        record = self.db.get_alert(item.alert_id)
        if record is None:
            return
        created = record.created_at if record.created_at.tzinfo else record.created_at.replace(tzinfo=UTC)
        self._publish(
            BusMessage(
                alert_id=record.id,
                kind="clip",
                camera_id=record.camera_id,
                village=record.village,
                grid=record.grid,
                label=record.label,
                score=record.score,
                created_at=created.astimezone(UTC).isoformat(),
                snapshot_key=record.snapshot_key,
                clip_key=item.key,
            )
        )

    def on_spool_evicted(self, item: SpoolItem) -> None:
        if item.kind == "clip":
            self.db.set_clip(
                item.alert_id, key=None, status="failed", error="evicted from the spool (disk quota)"
            )

    def on_spool_failed(self, item: SpoolItem) -> None:
        if item.kind == "clip":
            self.db.set_clip(
                item.alert_id,
                key=None,
                status="failed",
                error="upload refused by the store; the file is kept in the spool's failed/ directory",
            )
