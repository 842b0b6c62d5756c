"""From detections to stored, published alerts: rules -> row -> snapshot -> bus -> clip.

An alert's event follows its object's track. While the object is seen, the event extends its clip (the
recording ends `post_roll_s` after the last sighting; the ingest side cuts it into continuation clips of
at most `max_clip_s`) and keeps a copy of the best-scoring frame; when the event ends and that frame scored
higher than the alert's, it replaces the snapshot (same key) and the thumbnail.

Those copies are full-resolution frames, held as long as their events last, so their memory is capped
(`best_frame_memory_bytes`, all open events together): when keeping a new best frame would go over the cap,
the events holding the oldest best frames are finalized first, their frame written out at once as at the
event's end and the copy dropped, until the new one fits. Such an event may keep a later, better frame
again (it replaces the snapshot again at the end). Replacements of one event are written in the order
their frames were kept, so an older frame never overwrites a better one.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import cv2
import numpy as np

from alerts.bus import REPUBLISH_WINDOW_S, AlertBus, BusMessage
from alerts.evaluator import FrameEvaluator
from alerts.outbox import OutboxPublisher
from alerts.rules import RuleEngine, Trigger
from detect.annotate import draw_detections, encode_jpeg
from detect.detections import Detections
from detect.tracker import Track
from detect.zones import Zone
from ingest.clip import ClipHandle, ClipResult
from ingest.frames import Frame
from ingest.source import ClipRequest
from storage.metadata import AlertRecord, ClipFacts, Fence, ImageKind, MetadataDB, StaleFence
from storage.objectstore import ObjectStore, StorageError
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
    clip: ClipHandle | None = None  # the recording, extended while the object is seen
    frame_score: float = 0.0  # the score of the object in the snapshot, or in `best_image`
    best_image: np.ndarray | None = None  # a copy of a frame that beats the snapshot (one per event)
    best_detections: Detections | None = None  # that frame's detections, drawn when it is stored
    best_order: int = 0  # when `best_image` was kept (the pipeline's count): the lowest is the oldest
    replacements: int = 0  # snapshot replacements handed to the upload threads (detector thread)
    replaced: int = 0  # the newest of them written (upload threads, under `lock`)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


class AlertPipeline:
    """Turns a frame's detections into alerts. Uploads never run in the detector thread.

    Every snapshot, thumbnail and clip goes through the `spool`: the alert is published at once with its
    (deterministic) snapshot key, and the database row and the `clip` bus message follow when the spool
    has confirmed the upload (`on_spool_stored`). The caller starts the spool with the `on_spool_*`
    callbacks. An upload confirmed after its alert was deleted (retention) is deleted from the store again.
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
        spool: Spool,
        upload_workers: int = 2,
        zones: Mapping[str, Mapping[str, Zone]] | None = None,
        masks: Mapping[str, list[Zone]] | None = None,
        max_clip_s: float = 120.0,
        thumbnail_width: int = 320,
        best_frame_memory_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        if best_frame_memory_bytes < 0:
            raise ValueError(
                f"best_frame_memory_bytes must be >= 0 (0: no cap), got {best_frame_memory_bytes}"
            )
        self.rules = rules
        self.bus = bus
        self.db = db
        self.store = store
        self.spool = spool
        self.places = places
        self.request_clip = request_clip
        self.pre_roll_s = pre_roll_s
        self.post_roll_s = post_roll_s
        self.max_clip_s = max_clip_s
        self.thumbnail_width = thumbnail_width
        self.best_frame_memory_bytes = best_frame_memory_bytes  # 0: no cap
        self.best_frames_flushed = 0  # best frames written out before their event ended, to stay in the cap
        self._best_bytes = 0  # held by the best frames of open events (detector thread)
        self._best_order = itertools.count(1)
        self._uploads = ThreadPoolExecutor(max_workers=upload_workers, thread_name_prefix="upload")
        self.evaluator = FrameEvaluator(rules, zones, masks)
        self.alerts_created = 0
        self.alerts_by_label: Counter[str] = Counter()
        # A worker of many: the worker's lease of the camera (checked in Redis) before an alert is written,
        # None when it no longer holds the camera; the database refuses the alert too if a newer lease has
        # claimed the camera since (`StaleFence`). None here: one process owns every camera.
        self.fence: Callable[[str], Fence | None] | None = None
        self.fenced_out = 0
        self.events: dict[tuple[str, int], list[OpenEvent]] = {}  # (camera, track id) -> its alerts' events

    def handle(self, frame: Frame, detections: Detections) -> list[str]:
        """Track, evaluate the rules, return the ids of the alerts raised (called by the detector thread)."""
        detections, triggers = self.evaluator.evaluate(frame, detections)
        fence = None
        if triggers and self.fence is not None:
            fence = self.fence(frame.camera_id)
            if fence is None:
                log.warning(
                    "camera %s: %d alert(s) not raised: this worker no longer holds the camera (its lease "
                    "moved)",
                    frame.camera_id,
                    len(triggers),
                )
                self.fenced_out += len(triggers)
                triggers = []
        raised = []
        for trigger in triggers:
            try:
                raised.append(self._raise(frame, detections, trigger, fence))
            except StaleFence as exc:  # another worker took the camera since the lease was checked
                log.warning("%s (alert of %s not raised)", exc, trigger.label)
                self.fenced_out += 1
        self._follow_events(frame, detections)
        return raised

    def recording(self, camera_id: str) -> bool:
        """Whether an open event of the camera is still being recorded (keep it in full decode)."""
        return any(
            event.clip is not None and not event.clip.finished
            for (camera, _), events in self.events.items()
            if camera == camera_id
            for event in events
        )

    def _follow_events(self, frame: Frame, detections: Detections) -> None:
        """Events start with their alert, follow their object's track, and end when the track does."""
        camera_id = frame.camera_id
        for track in self.evaluator.tracks:
            events = self.events.get((camera_id, track.id))
            if not events:
                continue
            seen_now = track.last_seen == frame.captured_at
            for event in events:
                event.best_score = max(event.best_score, track.score)
                event.last_seen = track.last_seen
                if not seen_now:
                    continue
                if event.clip is not None:
                    event.clip.extend(frame.time_s, frame.connection, frame.captured_at)
                if track.score > event.frame_score:
                    self._keep_best_frame(event, frame.image, detections, track.score)
        for track in self.evaluator.ended:
            for event in self.events.pop((camera_id, track.id), []):
                self._end_event(event, track)

    def _keep_best_frame(
        self, event: OpenEvent, image: np.ndarray, detections: Detections, score: float
    ) -> None:
        """Keep a copy of `image` as the event's best frame, within the memory cap: first the events holding
        the oldest best frames are finalized until it fits (the event's own older frame is replaced, not
        counted); a frame over the cap by itself is written out at once."""
        cap = self.best_frame_memory_bytes
        held = event.best_image.nbytes if event.best_image is not None else 0
        if cap and self._best_bytes - held + image.nbytes > cap:
            holders = sorted(
                (e for e in self._open_events() if e.best_image is not None and e is not event),
                key=lambda e: e.best_order,
            )
            for oldest in holders:
                if self._best_bytes - held + image.nbytes <= cap:
                    break
                self._flush_best_frame(oldest)
        _keep_frame(event, image, detections, score)
        assert event.best_image is not None
        event.best_order = next(self._best_order)
        self._best_bytes += event.best_image.nbytes - held
        if cap and self._best_bytes > cap:
            self._flush_best_frame(event)

    def _open_events(self) -> Iterator[OpenEvent]:
        for events in self.events.values():
            yield from events

    def _flush_best_frame(self, event: OpenEvent) -> None:
        """Finalize the event's best frame before the event ends: write it out now, drop the copy."""
        self.best_frames_flushed += 1
        log.info(
            "alert %s: best frame (score %.2f) written out before the event's end: the best frames of open "
            "events would take more than %.1f MiB (best_frame_memory_mb); %d written early so far",
            event.message.alert_id,
            event.frame_score,
            self.best_frame_memory_bytes / (1024 * 1024),
            self.best_frames_flushed,
        )
        self._write_best_frame(event)

    def _write_best_frame(self, event: OpenEvent) -> None:
        """Hand the event's best frame to the upload threads as its snapshot's replacement."""
        image, found = event.best_image, event.best_detections
        if image is None or found is None:
            return
        event.best_image = event.best_detections = None
        self._best_bytes -= image.nbytes
        event.replacements += 1
        self._uploads.submit(
            self._replace_snapshot, event, event.replacements, image, found, event.frame_score
        )

    def _end_event(self, event: OpenEvent, track: Track) -> None:
        if event.clip is not None:
            event.clip.release()  # the recording ends post_roll_s after the last sighting
        self._write_best_frame(event)
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

    def _raise(self, frame: Frame, detections: Detections, trigger: Trigger, fence: Fence | None) -> str:
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
            severity=trigger.severity,
            rule=trigger.rule,
        )
        self.db.add_alert(record, fence)  # the fenced write: what follows delivers an accepted alert
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
        snapshot_key = self._store_snapshot(frame.camera_id, frame.image, detections, alert_id, created_at)
        message = alert_message(dataclasses.replace(record, snapshot_key=snapshot_key))
        self._publish(message)
        request = ClipRequest(
            time_s=frame.time_s,
            connection=frame.connection,
            pre_roll_s=self.pre_roll_s,
            post_roll_s=self.post_roll_s,
            on_done=lambda result: self._uploads.submit(self._store_clip, message, result),
            wall_time=frame.captured_at,
            max_clip_s=self.max_clip_s,
        )
        event = OpenEvent(message, trigger.score, frame.captured_at, request.handle, trigger.score)
        self.events.setdefault((frame.camera_id, trigger.track_id), []).append(event)
        self.request_clip(frame.camera_id, request)
        return alert_id

    def _store_snapshot(
        self,
        camera_id: str,
        image: np.ndarray,
        detections: Detections,
        alert_id: str,
        created_at: datetime,
    ) -> str | None:
        """The snapshot (boxes drawn) and its thumbnail; the snapshot's key, None if it was not kept."""
        key = self.store.snapshot_key(camera_id, created_at, alert_id)
        try:
            drawn = draw_detections(image, detections)
            stored = self._put_image("snapshot", key, encode_jpeg(drawn), alert_id, camera_id)
        except Exception:
            log.exception("snapshot of alert %s (camera %s) not stored", alert_id, camera_id)
            return None
        try:
            thumbnail = encode_jpeg(_shrink(drawn, self.thumbnail_width), quality=80)
            self._put_image(
                "thumbnail",
                self.store.thumbnail_key(camera_id, created_at, alert_id),
                thumbnail,
                alert_id,
                camera_id,
            )
        except Exception:
            log.exception("thumbnail of alert %s (camera %s) not stored", alert_id, camera_id)
        return key if stored else None

    def _put_image(self, kind: ImageKind, key: str, jpeg: bytes, alert_id: str, camera_id: str) -> bool:
        """Through the spool: the row gets the key and size once it is uploaded, and is marked pending until
        then, so retention keeps the alert."""
        since = datetime.now(UTC)
        self.db.mark_image_pending(alert_id, kind, since)
        item = self.spool.put_bytes(
            kind,
            key,
            jpeg,
            "image/jpeg",
            alert_id=alert_id,
            camera_id=camera_id,
            tags={"camera": camera_id},
        )
        if item is None:
            self.db.clear_image_pending(alert_id, kind, since)
        return item is not None

    def _image_stored(self, kind: str, alert_id: str, key: str, size: int, spooled_at: datetime) -> None:
        if kind == "thumbnail":
            self.db.set_thumbnail(alert_id, key, size_bytes=size, spooled_at=spooled_at)
        else:
            self.db.set_snapshot(alert_id, key, size_bytes=size, spooled_at=spooled_at)

    def _replace_snapshot(
        self, event: OpenEvent, replacement: int, image: np.ndarray, detections: Detections, score: float
    ) -> None:
        """A frame scored higher than the alert's (the event is over, or its frame was finalized early): it
        becomes the snapshot (same key, so links keep working) and the thumbnail (upload thread). The event's
        replacements are spooled in the order they were made; one overtaken by a newer one is dropped."""
        message = event.message
        created_at = datetime.fromisoformat(message.created_at)
        with event.lock:
            if replacement < event.replaced:
                log.debug("alert %s: snapshot replacement %d overtaken", message.alert_id, replacement)
                return
            event.replaced = replacement
            key = self._store_snapshot(message.camera_id, image, detections, message.alert_id, created_at)
        log.info(
            "alert %s: snapshot %s with the best frame of the event (score %.2f, alert %.2f)",
            message.alert_id,
            "replaced" if key else "NOT replaced",
            score,
            message.score,
        )

    # Set by the runtime: publish through the local outbox (kept on disk while Redis is unreachable).
    outbox: OutboxPublisher | None = None

    def republish_unpublished(self, camera_ids: list[str], now: datetime | None = None) -> list[str]:
        """Publish the alerts of these cameras from the last `REPUBLISH_WINDOW_S` that are in the database
        but never reached the stream: a worker killed between an alert's row and its publication leaves
        one, and the worker that takes the camera over calls this when it starts it. Not yet attached to an
        incident (the dispatcher never saw them) and without a published marker; the ids published. A
        race with a worker publishing the same alert adds it once (`AlertBus.add`). Redis errors propagate
        (nothing is lost: the next start tries again)."""
        if not camera_ids:
            return []
        since = (now or datetime.now(UTC)) - timedelta(seconds=REPUBLISH_WINDOW_S)
        candidates = [
            a
            for a in self.db.list_alerts(limit=1000, cameras=camera_ids, since=since)
            if a.incident_id is None
        ]
        done = self.bus.published([a.id for a in candidates])
        missing = [a for a in candidates if a.id not in done]
        for alert in sorted(missing, key=lambda a: a.created_at):
            log.warning("alert %s of camera %s was never published (its worker stopped first): publishing it",
                        alert.id, alert.camera_id)  # fmt: skip
            self._publish(alert_message(alert))
        return [a.id for a in missing]

    def _publish(self, message: BusMessage) -> None:
        """Through the outbox when there is one (it does not raise for Redis errors), else straight to the
        bus (small tools and tests: a failure is logged; the alert is in the database)."""
        try:
            if self.outbox is not None:
                self.outbox.publish(message)
            else:
                self.bus.publish(message)
        except Exception:
            log.exception("alert %s not published to the bus (it is in the database)", message.alert_id)

    def _store_clip(self, message: BusMessage, result: ClipResult) -> None:
        """One clip file of the alert's recording (upload thread): a clips row, then the upload."""
        alert_id, sequence = message.alert_id, result.sequence
        if result.path is None:
            log.warning("alert %s has no clip %d: %s", alert_id, sequence, result.error)
            if sequence == 0:
                self.db.set_clip(alert_id, key=None, status="failed", error=result.error)
            return
        created_at = datetime.fromisoformat(message.created_at)
        key = self.store.clip_key(message.camera_id, created_at, alert_id, sequence)
        try:
            clip_id = self._add_clip_row(message, result, key, created_at)
        except Exception:
            log.exception("clip %d of alert %s: no clips row", sequence, alert_id)
            clip_id = None
        self._spool_clip(message, result, key, clip_id)

    def _add_clip_row(self, message: BusMessage, result: ClipResult, key: str, created_at: datetime) -> str:
        started = datetime.fromtimestamp(result.started_at, UTC) if result.started_at else created_at
        facts = ClipFacts(
            started_at=started,
            duration_s=result.duration_s,
            size_bytes=result.size_bytes,
            sha256=result.sha256 or "",
            codec=result.codec or "unknown",
        )
        row = self.db.add_clip(message.alert_id, key, sequence=result.sequence, status="pending", facts=facts)
        return row.id

    def _clip_stored(
        self, alert_id: str, clip_id: str | None, sequence: int, key: str, duration_s: float | None
    ) -> None:
        if clip_id is not None:
            self.db.update_clip(clip_id, "stored")
        if sequence == 0:  # the alert's clip summary (what the feed and the API show) is its first clip
            self.db.set_clip(alert_id, key=key, status="stored", duration_s=duration_s)
        record = self.db.get_alert(alert_id)
        if record is None:
            raise KeyError(f"no alerts row {alert_id!r}")
        log.info("clip %d of alert %s stored: %s (%.1f s)", sequence, alert_id, key, duration_s or 0.0)
        self._publish(record_message(record, "clip", clip_key=key, sequence=sequence))

    def _clip_failed(
        self, alert_id: str, clip_id: str | None, sequence: int | None, error: str, status: str = "failed"
    ) -> None:
        try:
            if clip_id is not None:
                self.db.update_clip(clip_id, "evicted" if status == "evicted" else "failed", error=error)
            if not sequence:
                self.db.set_clip(alert_id, key=None, status="failed", error=error)
        except KeyError:
            log.warning("alert %s is gone (retention?): clip %s not marked %s", alert_id, sequence, status)

    # -- through the spool -------------------------------------------------------------------------
    def _spool_clip(self, message: BusMessage, result: ClipResult, key: str, clip_id: str | None) -> None:
        assert result.path is not None
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
                clip_id=clip_id,
                sequence=result.sequence,
            )
        finally:
            result.path.unlink(missing_ok=True)
        if item is None:
            error = "not spooled: the local disk is full or failing"
            self._clip_failed(message.alert_id, clip_id, result.sequence, error)
            return
        log.info(
            "clip %d of alert %s spooled (%.1f s, %d bytes)",
            result.sequence,
            message.alert_id,
            result.duration_s,
            item.size,
        )

    def on_spool_stored(self, item: SpoolItem) -> None:
        """The spool confirmed an upload: record it, and for a clip tell the bus. If the alert's row is gone
        (retention deleted it while the item waited), the object is deleted again: no row would ever point
        to it, so no sweep would ever delete it."""
        try:
            if item.kind != "clip":
                spooled_at = datetime.fromisoformat(item.created_at)
                self._image_stored(item.kind, item.alert_id, item.key, item.size, spooled_at)
                return
            self._clip_stored(item.alert_id, item.clip_id, item.sequence or 0, item.key, item.duration_s)
        except KeyError:
            self._delete_orphan(item)

    def _delete_orphan(self, item: SpoolItem) -> None:
        if self.db.get_alert(item.alert_id) is not None:  # a row of the alert's is gone, not the alert
            log.warning("%s %s of alert %s stored, but its row is gone", item.kind, item.key, item.alert_id)
            return
        try:
            self.store.delete(item.key)
        except StorageError as exc:
            log.error(
                "%s %s stored after alert %s was deleted (retention?), and it could not be deleted: it is "
                "left in the store, no row points to it: %s",
                item.kind,
                item.key,
                item.alert_id,
                exc,
            )
            return
        log.warning(
            "%s %s stored after alert %s was deleted (retention?): deleted from the store again",
            item.kind,
            item.key,
            item.alert_id,
        )

    def on_spool_evicted(self, item: SpoolItem) -> None:
        if item.kind == "clip":
            error = "evicted from the spool (disk quota)"
            self._clip_failed(item.alert_id, item.clip_id, item.sequence, error, status="evicted")
        else:
            self.db.clear_image_pending(item.alert_id, item.kind, datetime.fromisoformat(item.created_at))

    def on_spool_failed(self, item: SpoolItem) -> None:
        if item.kind == "clip":
            error = "upload refused by the store; the file is kept in the spool's failed/ directory"
            self._clip_failed(item.alert_id, item.clip_id, item.sequence, error)
        else:
            self.db.clear_image_pending(item.alert_id, item.kind, datetime.fromisoformat(item.created_at))


def _keep_frame(event: OpenEvent, image: np.ndarray, detections: Detections, score: float) -> None:
    """Keep a copy of `image` as the event's best frame, reusing the event's buffer when it fits."""
    if event.best_image is not None and event.best_image.shape == image.shape:
        np.copyto(event.best_image, image)
    else:
        event.best_image = image.copy()
    event.best_detections = detections
    event.frame_score = score


def _shrink(image: np.ndarray, width: int) -> np.ndarray:
    """`image` scaled down to `width` pixels wide (never up), aspect kept."""
    height, current = image.shape[:2]
    if current <= width:
        return image
    size = (width, max(1, round(height * width / current)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def record_message(alert: AlertRecord, kind: str, **fields: Any) -> BusMessage:
    """A bus message about an alert as the database has it: its identity, place, label and snapshot, plus
    the `fields` of this kind of message."""
    return BusMessage(
        alert_id=alert.id,
        kind=kind,
        camera_id=alert.camera_id,
        village=alert.village,
        grid=alert.grid,
        label=alert.label,
        score=alert.score,
        created_at=_utc_iso(alert.created_at),
        snapshot_key=alert.snapshot_key,
        **fields,
    )


def alert_message(alert: AlertRecord) -> BusMessage:
    """The "alert" bus message of an alert as the database has it (what its worker would have published)."""
    return record_message(
        alert,
        "alert",
        bbox=alert.bbox,
        frame_time=_utc_iso(alert.frame_time),
        severity=alert.severity,
        rule=alert.rule,
    )


def _utc_iso(at: datetime) -> str:
    """ISO 8601 in UTC (a naive time is UTC: what SQLite gives back)."""
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
