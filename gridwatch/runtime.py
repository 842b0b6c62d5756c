"""`gridwatch run`: every part in one process, embedded servers where no external ones are configured."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from alerts.bus import AlertBus
from alerts.camera_status import CameraStatusPublisher
from alerts.dispatch_loop import DispatchLoop
from alerts.outbox import OutboxPublisher
from alerts.pipeline import AlertPipeline, CameraPlace
from alerts.rules import LabelThreshold, RuleEngine
from detect.crops import CropPolicy
from detect.detections import Detections
from detect.loop import Detector, DetectorLoop
from detect.motion import MotionGate
from detect.zones import Zone
from gridwatch.alert_metrics import AlertSideCollector
from gridwatch.alerting import RuleWatcher, build_rules, sync_organisation
from gridwatch.api import AppState, create_app
from gridwatch.dispatch import build_dispatch_loop, build_dispatcher, build_status_relay
from gridwatch.feed import FeedHub
from gridwatch.metrics import RuntimeCollector, make_registry, render
from gridwatch.models import load_detectors
from gridwatch.services import RedisServer, S3Server
from gridwatch.settings import SIM_SCHEME, Settings
from ingest.frames import Frame, FrameSlot
from ingest.source import CameraSource, ClipRequest, SourceConfig
from ingest.state import StateChange
from ingest.urls import redact_url
from storage.metadata import CameraRecord, MetadataDB
from storage.objectstore import ObjectStore
from storage.retention import RetentionPolicy, RetentionSweeper
from storage.spool import Spool

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Owns every part of a running GridWatch; `start()` brings them up, `stop()` takes them down."""

    settings: Settings
    detectors: list[Detector] | None = None  # injected by tests; else loaded from the model cache
    redis_url: str = ""
    s3_endpoint: str = ""
    api_port: int | None = None
    sources: dict[str, CameraSource] = field(default_factory=dict)
    slots: dict[str, FrameSlot] = field(default_factory=dict)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    db: MetadataDB | None = None
    store: ObjectStore | None = None
    spool: Spool | None = None
    retention: RetentionSweeper | None = None
    bus: AlertBus | None = None
    dispatch_loop: DispatchLoop | None = None
    outbox: OutboxPublisher | None = None
    rule_watcher: RuleWatcher | None = None
    pipeline: AlertPipeline | None = None
    loop: DetectorLoop | None = None
    status: CameraStatusPublisher | None = None
    collector: RuntimeCollector | None = None
    _api_server: Any = None

    def start(self) -> Runtime:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        s = self.settings
        data_dir = s.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "clips-tmp").mkdir(exist_ok=True)

        # Servers: external when configured, else embedded real ones under the data directory.
        if s.redis.url is not None:
            self.redis_url = s.redis.url.get_secret_value()
        else:
            log.info("starting embedded Redis (valkey) under %s", data_dir / "redis")
            # AOF, fsync every second: a kill -9 of Redis or of this process loses nothing (the kernel has
            # the writes), a power cut about a second; "always" would fsync on every write (slow on SD cards).
            fsync = s.redis.embedded_appendfsync
            server = RedisServer(data_dir / "redis", appendonly=True, fsync=fsync).start()
            self._stack.callback(server.stop)
            self.redis_url = server.url
        if s.s3.endpoint is not None:
            self.s3_endpoint = s.s3.endpoint
        else:
            log.info("starting embedded S3 (SeaweedFS) under %s", data_dir / "s3")
            s3 = S3Server(
                data_dir / "s3", s.s3.access_key, s.s3.secret_key.get_secret_value(), persist=True
            ).start(timeout=60)
            self._stack.callback(s3.stop)
            self.s3_endpoint = s3.endpoint

        urls, record_urls = self._camera_urls(data_dir)
        self.collector = RuntimeCollector(
            self.sources,
            self.slots,
            loop=lambda: self.loop,
            alerts_by_label=lambda: self.pipeline.alerts_by_label if self.pipeline else {},
            best_frames_flushed=lambda: self.pipeline.best_frames_flushed if self.pipeline else None,
            spool=lambda: self.spool.stats if self.spool else None,
            retention=lambda: self.retention.totals if self.retention else None,
        )

        self.db = MetadataDB(s.database_url())
        self._stack.callback(self.db.close)
        self.db.create_schema()
        sync_organisation(s, self.db)
        self.db.upsert_cameras(
            [
                CameraRecord(
                    id=c.id,
                    name=c.name,
                    village=c.village,
                    grid=c.grid,
                    url_redacted=redact_url(c.url.get_secret_value()),
                    detect_fps=c.detect_fps,
                    enabled=c.enabled,
                )
                for c in s.cameras
            ]
        )
        self.store = ObjectStore(
            self.s3_endpoint,
            s.s3.access_key,
            s.s3.secret_key.get_secret_value(),
            s.s3.bucket,
            secure=s.s3.secure,
            region=s.s3.region,
        )
        # No ensure_bucket() here: the spool's uploader does it (and retries), so a worker starts and spools
        # while the store is unreachable.
        self.spool = Spool(
            self.store,
            s.spool_dir().resolve(),
            s.spool.quota_mb * 1024 * 1024,
            retry_initial_s=s.spool.retry_initial_s,
            retry_max_s=s.spool.retry_max_s,
        )
        self.bus = AlertBus.from_url(self.redis_url, s.redis.stream, s.redis.stream_maxlen)
        self._stack.callback(self.bus.close)
        # Alerts go through a local outbox: kept on disk while Redis is unreachable, sent in order after.
        # Closed after the pipeline and the spool (which still publish), before the bus.
        self.outbox = OutboxPublisher(
            self.bus,
            data_dir / "outbox.db",
            max_items=s.redis.outbox_max_items,
            timeout_s=s.redis.publish_timeout_s,
        )
        self._stack.callback(self.outbox.close)
        self.status = CameraStatusPublisher(self.bus.client)
        self.status.start()
        self._start_dispatcher()
        self._stack.callback(self.status.stop)

        if self.detectors is None:
            self.detectors = load_detectors(s.models)

        ing = s.ingest
        for camera in s.cameras:
            if not camera.enabled:
                continue
            slot = FrameSlot()
            source = CameraSource(
                SourceConfig(
                    camera_id=camera.id,
                    url=urls[camera.id],
                    record_url=record_urls.get(camera.id),
                    detect_fps=camera.detect_fps,
                    ring_seconds=max(s.clips.pre_roll_s + 2.0, 4.0),
                    open_timeout_s=ing.open_timeout_s,
                    read_timeout_s=ing.read_timeout_s,
                    stall_after_s=ing.stall_after_s,
                    watchdog_timeout_s=ing.watchdog_timeout_s,
                    backoff_initial_s=ing.backoff_initial_s,
                    backoff_max_s=ing.backoff_max_s,
                    stable_after_s=ing.stable_after_s,
                    auth_backoff_s=ing.auth_backoff_s,
                    keyframes_when_idle=ing.keyframes_when_idle,
                    active_hold_s=ing.active_hold_s,
                    idle_keyframe_interval_s=ing.idle_keyframe_interval_s,
                    wake_ratio=ing.wake_ratio,
                    wake_hold_s=ing.wake_hold_s,
                ),
                slot,
                clip_dir=data_dir / "clips-tmp",
                on_state=self._on_state,
                motion=MotionGate(mask=[*camera.masks, *camera.motion_masks]),
            )
            self.slots[camera.id] = slot
            self.sources[camera.id] = source

        rules = RuleEngine(
            build_rules(s),
            camera_thresholds={
                c.id: {label: LabelThreshold(t.min_score, t.min_area) for label, t in c.thresholds.items()}
                for c in s.cameras
                if c.thresholds
            },
            places={c.id: (c.village, c.grid) for c in s.cameras},
        )
        self.rule_watcher = RuleWatcher(s, self.db, rules)
        self.rule_watcher.start()
        self._stack.callback(self.rule_watcher.stop)
        self.pipeline = AlertPipeline(
            rules=rules,
            bus=self.bus,
            db=self.db,
            store=self.store,
            places={c.id: CameraPlace(c.village, c.grid) for c in s.cameras},
            request_clip=self._request_clip,
            pre_roll_s=s.clips.pre_roll_s,
            post_roll_s=s.clips.post_roll_s,
            zones={c.id: {z.name: Zone(z.name, tuple(z.polygon)) for z in c.zones} for c in s.cameras},
            masks={c.id: [Zone(f"mask-{i}", tuple(m)) for i, m in enumerate(c.masks)] for c in s.cameras},
            spool=self.spool,
            max_clip_s=s.clips.max_clip_s,
            thumbnail_width=s.clips.thumbnail_width,
            best_frame_memory_bytes=s.clips.best_frame_memory_mb * 1024 * 1024,
        )
        self.pipeline.outbox = self.outbox
        # Stopped after the pipeline (which hands it clips still being spooled), before the bus and database.
        self.spool.start(
            on_stored=self.pipeline.on_spool_stored,
            on_evicted=self.pipeline.on_spool_evicted,
            on_failed=self.pipeline.on_spool_failed,
        )
        self._stack.callback(self.spool.stop, s.spool.stop_grace_s)
        self._stack.callback(self.pipeline.close)
        if s.retention.enabled:
            policy = RetentionPolicy(**s.retention.model_dump(exclude={"enabled"}))
            self.retention = self._stack.enter_context(RetentionSweeper(self.db, self.store, policy))
        self.loop = DetectorLoop(
            self.slots,
            self.detectors,
            self._on_detections,
            max_batch=s.models.batch_size,
            refresh_s=s.models.still_refresh_s,
            refresh_max_s=s.models.still_refresh_max_s,
            workers=s.models.inference_workers,
            batch_timeout_s=s.models.batch_timeout_s,
            crops=CropPolicy(max_crops=s.models.max_crops) if s.models.region_crops else None,
            follow=self.pipeline.evaluator.following,
        )

        for source in self.sources.values():
            source.start()
        self._stack.callback(self._stop_sources)
        self.loop.start()
        self._stack.callback(self._stop_loop)

        if s.api.enabled:
            self._start_api()
        log.info(
            "GridWatch running: %d camera(s), Redis %s, S3 %s%s",
            len(self.sources),
            redact_url(self.redis_url),
            self.s3_endpoint,
            f", API http://{s.api.host}:{self.api_port}" if self.api_port else "",
        )

    def _camera_urls(self, data_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
        """Detect and record URLs per camera, `sim://NAME` resolved to the embedded simulator."""
        s = self.settings
        urls = {c.id: c.url.get_secret_value() for c in s.cameras}
        record = {c.id: c.record_url.get_secret_value() for c in s.cameras if c.record_url is not None}
        if s.simulator is None or not s.simulator.cameras:
            return urls, record
        from ingest.simulator.media import prepare_media
        from ingest.simulator.server import Mount, RtspSimulator

        media = prepare_media(s.simulator.media_dir, progress=lambda line: log.info("media: %s", line))
        mounts = [
            Mount(name=m.name, kind="pattern")
            if m.media == "pattern"
            else Mount(name=m.name, kind="file", path=media[m.media], loop=m.loop)
            for m in s.simulator.cameras
        ]
        simulator = RtspSimulator(mounts)
        simulator.start()
        self._stack.callback(simulator.stop)
        log.info("simulated cameras on rtsp://127.0.0.1:%d/", simulator.port)
        for table in (urls, record):
            for camera_id, url in table.items():
                if url.startswith(SIM_SCHEME):
                    table[camera_id] = simulator.url(url[len(SIM_SCHEME) :])
        return urls, record

    def _on_state(self, change: StateChange) -> None:
        if self.collector is not None:
            self.collector.on_state(change)
        if self.status is not None:
            self.status.publish(change)

    def _on_detections(self, frame: Frame, detections: Detections) -> None:
        """Alerts, then: while the camera follows a mover (even one standing still now) or records an
        event (a long one included: its clip goes on while the object is seen), decode in full."""
        assert self.pipeline is not None
        self.pipeline.handle(frame, detections)
        source = self.sources.get(frame.camera_id)
        camera = frame.camera_id
        if source is not None and (
            self.pipeline.evaluator.following(camera) or self.pipeline.recording(camera)
        ):
            source.hold_active(self.settings.ingest.active_hold_s)

    def _request_clip(self, camera_id: str, request: ClipRequest) -> None:
        source = self.sources[camera_id]
        source.hold_active(request.post_roll_s + self.settings.ingest.active_hold_s)
        source.request_clip(request)

    def camera_health(self, camera_id: str) -> dict[str, Any] | None:
        source = self.sources.get(camera_id)
        if source is None:
            return None
        return {role: dataclasses.asdict(h) for role, h in source.health().items()}

    def _start_api(self) -> None:
        assert self.db is not None and self.store is not None
        assert self.collector is not None
        registry = make_registry(self.collector)
        registry.register(AlertSideCollector(lambda: self.dispatch_loop, lambda: self.outbox))
        state = AppState(
            self.db,
            self.store,
            self.settings.s3.presign_seconds,
            self.camera_health,
            metrics=lambda: render(registry),
            settings=self.settings,
            publish=self.outbox.publish if self.outbox is not None else None,
            feed=self._start_feed(),
        )
        app = create_app(state)
        family = socket.AF_INET6 if ":" in self.settings.api.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.settings.api.host, self.settings.api.port))
        sock.listen(128)
        self.api_port = sock.getsockname()[1]
        # open live-feed streams never end by themselves: give them 3 s at shutdown, then close them
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=3
        )
        server = uvicorn.Server(config)
        self._api_server = server
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="api", daemon=True)
        thread.start()

        def stop_api() -> None:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()

        self._stack.callback(stop_api)
        deadline = time.monotonic() + 10
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not server.started:
            raise RuntimeError(f"the API did not start on {self.settings.api.host}:{self.api_port}")

    def _start_feed(self) -> FeedHub | None:
        if self.bus is None:
            return None
        feed = FeedHub(self.bus.client, self.bus.stream)
        feed.start()
        self._stack.callback(feed.stop)
        return feed

    def _start_dispatcher(self) -> None:
        """The all-in-one run dispatches too: incidents, notifications, escalation."""
        assert self.bus is not None and self.db is not None
        dispatcher = build_dispatcher(self.settings, self.db, self.bus.client)
        self._stack.callback(dispatcher.close)
        self.dispatch_loop = build_dispatch_loop(self.settings, self.bus, dispatcher)
        self.dispatch_loop.start()
        self._stack.callback(self.dispatch_loop.stop)
        relay = build_status_relay(self.settings, self.bus, dispatcher)
        if relay is not None:
            relay.start()
            self._stack.callback(relay.stop)

    def _stop_sources(self) -> None:
        for source in self.sources.values():
            source.stop()
        for source in self.sources.values():
            source.join(timeout=15)

    def _stop_loop(self) -> None:
        if self.loop is not None:
            self.loop.stop()
            self.loop.join(timeout=15)

    def stop(self) -> None:
        self._stack.close()
