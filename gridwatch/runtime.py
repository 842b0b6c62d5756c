"""`gridwatch run`: every part in one process, embedded servers where no external ones are configured."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import redis
import uvicorn
from sqlalchemy.exc import SQLAlchemyError

from alerts.bus import AlertBus
from alerts.camera_status import CameraStatusPublisher
from alerts.dispatch_loop import DispatchLoop
from alerts.outbox import OutboxPublisher
from alerts.pipeline import AlertPipeline, CameraPlace
from alerts.redis_connect import connect as connect_redis
from alerts.rules import LabelThreshold, RuleEngine
from detect.crops import CropPolicy
from detect.detections import Detections
from detect.loop import Detector, DetectorLoop
from detect.motion import MotionGate
from detect.zones import Zone
from gridwatch.alert_metrics import AlertSideCollector
from gridwatch.alerting import RuleWatcher, build_rules, sync_organisation
from gridwatch.api import AppState, create_app
from gridwatch.api_health import READY_PROBE_ID
from gridwatch.camera_registry import (
    CameraRegistry,
    camera_detection,
    camera_urls,
    observed_probe,
    settings_box,
    sync_config_cameras,
    wants_observed_probe,
)
from gridwatch.camera_watcher import CameraWatcher
from gridwatch.cluster import DEFAULT_KEYS, FencedOut, LeaseKeeper, check_fence, lease_value
from gridwatch.cluster.capacity import CapacityMeter, CapacityTracker, available_cores
from gridwatch.cluster.cost_memory import CostMemory, machine_signature
from gridwatch.dispatch import build_dispatch_loop, build_dispatcher, build_status_relay
from gridwatch.feed import FeedHub
from gridwatch.live_frames import FrameServer, LocalFrames
from gridwatch.metrics import RuntimeCollector, make_registry, render
from gridwatch.models import load_detectors
from gridwatch.sealing import SealError, SecretBox
from gridwatch.services import RedisServer, S3Server
from gridwatch.settings import SIM_SCHEME, CameraSettings, Settings
from gridwatch.worker_ops import LeaseCollector, OpsServer, ops_app
from ingest.frames import Frame, FrameSlot
from ingest.source import CameraSource, ClipRequest, SourceConfig
from ingest.state import StateChange, StreamState
from ingest.urls import redact_url
from storage.metadata import CameraRecord, Fence, MetadataDB, StaleFence
from storage.objectstore import ObjectStore
from storage.retention import RetentionPolicy, RetentionSweeper
from storage.spool import Spool

log = logging.getLogger(__name__)

# online this long (past the connect's burst: the rate is over 5 s) before the stream's figures become the
# camera's probe
OBSERVE_PROBE_AFTER_S = 12.0


@dataclass
class Runtime:
    """Owns every part of a running GridWatch; `start()` brings them up, `stop()` takes them down."""

    settings: Settings
    detectors: list[Detector] | None = None  # injected by tests; else loaded from the model cache
    # "all": `gridwatch run`, every part and every camera; "worker": `gridwatch worker`, detection only, the
    # cameras this worker holds leases for, external Redis, S3 and database
    mode: Literal["all", "worker"] = "all"
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
    box: SecretBox | None = None
    camera_watcher: CameraWatcher | None = None
    _api_server: Any = None
    _simulator: Any = None
    _running: dict[str, CameraRecord] = field(default_factory=dict)  # the cameras pulled, as they started
    _places: dict[str, CameraPlace] = field(default_factory=dict)
    _rule_places: dict[str, tuple[str, str]] = field(default_factory=dict)
    _zones: dict[str, dict[str, Zone]] = field(default_factory=dict)
    _masks: dict[str, list[Zone]] = field(default_factory=dict)
    _thresholds: dict[str, dict[str, LabelThreshold]] = field(default_factory=dict)
    _reconcile_lock: threading.RLock = field(default_factory=threading.RLock)
    keeper: LeaseKeeper | None = None
    capacity: CapacityTracker | None = None  # a worker's measured capacity
    frame_server: FrameServer | None = None  # a worker answers picture requests for its cameras
    _machine_signature: str = ""  # what the camera cost is remembered under (gridwatch.cluster.cost_memory)
    _lease_client: Any = None
    ops: OpsServer | None = None
    worker_id: str = ""
    _camera_ids: list[str] = field(default_factory=list)  # the enabled cameras, for the lease keeper
    _unrecovered: set[str] = field(default_factory=set)  # started, not yet checked for unpublished alerts

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

        if self.mode == "worker":
            missing = [
                name
                for name, value in (
                    ("redis.url", s.redis.url),
                    ("s3.endpoint", s.s3.endpoint),
                    ("database.url", s.database.url),
                )
                if value is None
            ]
            if missing:
                raise RuntimeError(
                    f"`gridwatch worker` needs {', '.join(missing)}: workers of many machines share one "
                    "Redis, store and database (use `gridwatch run` for embedded servers)"
                )
            self.worker_id = s.worker.id or f"{socket.gethostname()}-{os.getpid()}"
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

        self._start_simulator()
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
        self.box = settings_box(s)
        sync_config_cameras(s, self.db, self.box, datetime.now(UTC))
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
        guard = self._status_guard if self.mode == "worker" else None  # a state only under the lease
        self.status = CameraStatusPublisher(self.bus.client, guard=guard)
        self.status.start()
        if self.mode == "all":
            self._start_dispatcher()
        self._stack.callback(self.status.stop)

        if self.detectors is None:
            self.detectors = load_detectors(s.models)

        rules = RuleEngine(build_rules(s), camera_thresholds=self._thresholds, places=self._rule_places)
        rules.camera_thresholds, rules.places = self._thresholds, self._rule_places  # filled per camera
        self.rule_watcher = RuleWatcher(s, self.db, rules)
        self.rule_watcher.start()
        self._stack.callback(self.rule_watcher.stop)
        self.pipeline = AlertPipeline(
            rules=rules,
            bus=self.bus,
            db=self.db,
            store=self.store,
            places=self._places,
            request_clip=self._request_clip,
            pre_roll_s=s.clips.pre_roll_s,
            post_roll_s=s.clips.post_roll_s,
            spool=self.spool,
            max_clip_s=s.clips.max_clip_s,
            thumbnail_width=s.clips.thumbnail_width,
            best_frame_memory_bytes=s.clips.best_frame_memory_mb * 1024 * 1024,
        )
        self.pipeline.outbox = self.outbox
        self.pipeline.evaluator.zones, self.pipeline.evaluator.masks = self._zones, self._masks
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

        started_from = self.db.camera_fingerprint()
        if self.mode == "worker":
            self._start_keeper()  # its leases are released after the sources stopped (clips finished)
        self._stack.callback(self._stop_sources)
        self.reconcile()
        self.loop.start()
        self._stack.callback(self._stop_loop)
        self.camera_watcher = CameraWatcher(self.db, self.reconcile, s.ingest.registry_poll_s, started_from)
        self.camera_watcher.start()
        self._stack.callback(self.camera_watcher.stop)  # stops before the sources do
        if self.keeper is not None:
            self.keeper.start()  # registers (refused if a live worker has this id), then ticks
            if self.capacity is not None:
                self.capacity.start()
                self._stack.callback(self.capacity.stop)

        if self.mode == "worker":
            self._start_frame_server()
            self._start_ops()
        elif s.api.enabled:
            self._start_api()
        log.info(
            "GridWatch %s running: %d camera(s), Redis %s, S3 %s%s",
            f"worker {self.worker_id}" if self.mode == "worker" else "(all in one)",
            len(self.sources),
            redact_url(self.redis_url),
            self.s3_endpoint,
            f", API http://{s.api.host}:{self.api_port}" if self.api_port else "",
        )

    def _start_keeper(self) -> None:
        """Leases in Redis: this worker pulls the cameras the assignment gives it, up to its capacity."""
        assert self.db is not None and self.pipeline is not None
        w = self.settings.worker
        client = connect_redis(self.redis_url, socket_timeout=2, socket_connect_timeout=2)
        self._stack.callback(client.close)
        self._camera_ids = sorted(c.id for c in self.db.list_cameras() if c.enabled)
        meter = self._capacity_meter(CostMemory(client)) if w.capacity_mode == "measured" else None
        self.keeper = LeaseKeeper(
            client,
            self.worker_id,
            meter.capacity if meter is not None else w.capacity,  # the first heartbeat has it already
            lambda: self._camera_ids,
            lease_ttl_ms=int(w.lease_ttl_s * 1000),
            settle_s=w.join_settle_s,
            replicas=w.lease_replicas,
            replica_timeout_ms=w.lease_replica_timeout_ms,
            on_acquired=lambda _camera, _token: self._wake_reconcile(),
            on_lost=self._lease_lost,
        )
        self.pipeline.fence = self.write_fence  # no alert for a camera whose lease this worker lost
        if meter is not None:
            loop, keeper = self.loop, self.keeper
            assert loop is not None
            memory, signature = CostMemory(client), self._machine_signature
            self.capacity = CapacityTracker(
                meter,
                lambda: loop.stats.busy_s,
                lambda: len(keeper.owned()),
                keeper.set_capacity,
                on_window=lambda m: self._remember_cost(memory, signature, m),
            )
        self._lease_client = client
        self._stack.callback(self.keeper.stop)

    def _local_frames(self) -> LocalFrames:
        """The next decoded frame of a camera this process runs (a still one decodes a keyframe every
        `ingest.idle_keyframe_interval_s`)."""
        return LocalFrames(self.slots, wait_s=self.settings.ingest.idle_keyframe_interval_s + 1.0)

    def _start_frame_server(self) -> None:
        """Picture requests from the API for this worker's cameras, on its own Redis connection."""
        client = connect_redis(self.redis_url, socket_timeout=5, socket_connect_timeout=2)
        self._stack.callback(client.close)
        assert self.worker_id is not None
        self.frame_server = FrameServer(client, self.worker_id, self._local_frames(), DEFAULT_KEYS)
        self.frame_server.start()
        self._stack.callback(self.frame_server.stop)

    def holds(self, camera_id: str) -> bool:
        """Whether this process may work on the camera: always in `gridwatch run`; a worker while it holds
        the camera's lease (by its own clock, which ends before Redis's)."""
        return self.keeper is None or self.keeper.token(camera_id) is not None

    def write_fence(self, camera_id: str) -> Fence | None:
        """Before an alert of the camera is written: this worker's lease as it sees it, its fencing token
        checked in Redis (a worker that was paused past its lease learns it here); None when it may not
        write. The database checks the token again in the alert's own transaction (`StaleFence`). While
        Redis does not answer, the local lease decides: it ends before Redis's, so no other worker can hold
        it yet. (`gridwatch run` owns every camera: its pipeline has no fence provider.)"""
        if self.keeper is None:
            return None
        token = self.keeper.token(camera_id)
        if token is None:
            return None
        try:
            check_fence(self._lease_client, camera_id, self.worker_id, token)
        except FencedOut:
            log.warning("camera %s: lease token %d is not the current one any more", camera_id, token)
            return None
        except redis.RedisError:
            pass
        return Fence(camera_id, self.worker_id, token)

    def _capacity_meter(self, memory: CostMemory) -> CapacityMeter:
        """Measured capacity: to start with, the cost per camera last measured on a machine like this one
        (`gridwatch.cluster.cost_memory`), or else the models timed here on a full batch of HD frames, at
        the cameras' mean rate for `worker.expected_activity` of the time (a refresh now and then
        otherwise); then the load measured while it runs (`gridwatch.cluster.capacity`)."""
        assert self.loop is not None and self.db is not None
        w = self.settings.worker
        default_fps = CameraSettings.model_fields["detect_fps"].default
        rates = [c.detect_fps for c in self.db.list_cameras() if c.enabled] or [default_fps]
        models = self.settings.models.model_dump_json(exclude={"dir"})
        self._machine_signature = machine_signature(available_cores(), [models], sum(rates) / len(rates))
        try:
            remembered = memory.recall(self._machine_signature)
        except redis.RedisError as exc:
            log.warning("worker %s: no remembered camera cost (Redis: %s)", self.worker_id, exc)
            remembered = None
        if remembered is not None:
            meter = CapacityMeter(
                w.capacity,
                target_load=w.target_load,
                window_s=w.capacity_window_s,
                calibrated_cost=remembered.cost,
            )
            log.info(
                "worker %s: starting from the camera cost measured by %s on a machine like this one %.1f h "
                "ago (%.2f %% of the detector each): capacity %d cameras (measured again while running)",
                self.worker_id,
                remembered.worker_id,
                (time.time() - remembered.measured_at) / 3600,
                remembered.cost * 100,
                meter.capacity,
            )
            return meter
        image = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
        seconds = self.loop.seconds_per_frame(image)
        meter = CapacityMeter(
            w.capacity,
            target_load=w.target_load,
            window_s=w.capacity_window_s,
            calibrated_cost=CapacityMeter.calibrated(
                seconds, sum(rates) / len(rates), w.expected_activity, self.settings.models.still_refresh_s
            ),
        )
        log.info(
            "worker %s: the models take %.1f ms per frame here: capacity %d cameras at %.1f frames/s each, "
            "something moving %.0f %% of the time (measured again while running; at most %d)",
            self.worker_id,
            seconds * 1000,
            meter.capacity,
            sum(rates) / len(rates),
            w.expected_activity * 100,
            w.capacity,
        )
        return meter

    def _remember_cost(self, memory: CostMemory, signature: str, meter: CapacityMeter) -> None:
        """After a window: the cost the capacity is planned on, for the next worker of this kind to start
        from, once the measurements alone decide it."""
        if meter.windows < meter.trust_after:
            return
        try:
            memory.remember(signature, meter.peak_cost(), self.worker_id, meter.windows)
        except redis.RedisError as exc:
            log.debug("camera cost not remembered (Redis: %s)", exc)

    def _status_guard(self, camera_id: str) -> tuple[str, str] | None:
        """What Redis must hold for this worker to write the camera's state: its lease, token and all."""
        token = self.keeper.token(camera_id) if self.keeper is not None else None
        if token is None:
            return None
        return DEFAULT_KEYS.lease(camera_id), lease_value(self.worker_id, token)

    def _lease_lost(self, camera_id: str) -> None:
        """Tell the camera's source to stop before the next owner starts (called before a release is sent);
        without waiting for it (the keeper must go on renewing the other leases): the reconcile that this
        wakes joins it and forgets the camera."""
        source = self.sources.get(camera_id)
        if source is not None:
            source.stop()
        self._wake_reconcile()

    def _wake_reconcile(self) -> None:
        if self.camera_watcher is not None:
            self.camera_watcher.wake()

    def _start_ops(self) -> None:
        """/healthz, /readyz and /metrics of a worker (it has no API)."""
        assert self.db is not None and self.store is not None and self.bus is not None
        assert self.collector is not None and self.keeper is not None
        registry = make_registry(self.collector)
        registry.register(LeaseCollector(self.keeper))
        db, store, client = self.db, self.store, self.bus.client
        checks: dict[str, Callable[[], object]] = {
            "database": lambda: db.get_alert(READY_PROBE_ID),
            "redis": client.ping,
            "object_store": lambda: store.exists(READY_PROBE_ID),
        }
        w = self.settings.worker
        self.ops = OpsServer(
            ops_app(checks, lambda: render(registry)), w.metrics_host, w.metrics_port
        ).start()
        self._stack.callback(self.ops.stop)
        log.info(
            "worker %s: /healthz, /readyz and /metrics on %s:%d",
            self.worker_id,
            w.metrics_host,
            self.ops.port,
        )

    def _start_simulator(self) -> None:
        """Serve the config's simulated cameras; `sim://NAME` URLs resolve to them (`resolve_url`)."""
        s = self.settings
        if s.simulator is None or not s.simulator.cameras:
            return
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
        self._simulator = simulator
        log.info("simulated cameras on rtsp://127.0.0.1:%d/", simulator.port)

    def resolve_url(self, url: str) -> str:
        if url.startswith(SIM_SCHEME) and self._simulator is not None:
            return str(self._simulator.url(url[len(SIM_SCHEME) :]))
        return url

    def reconcile(self) -> None:
        """Pull exactly the database's enabled cameras: start new ones, stop removed or disabled ones, and
        restart those changed since they started (a new URL, another grid...)."""
        assert self.db is not None and self.box is not None
        with self._reconcile_lock:
            wanted = {c.id: c for c in self.db.list_cameras() if c.enabled}
            self._camera_ids = sorted(wanted)
            if self.keeper is not None:  # a worker of many: the cameras it holds leases for
                owned = self.keeper.owned()
                wanted = {k: c for k, c in wanted.items() if k in owned}
            for camera_id in list(self.sources):
                camera = wanted.get(camera_id)
                if camera is None or camera.updated_at != self._running[camera_id].updated_at:
                    self._stop_camera(camera_id, "removed or disabled" if camera is None else "changed")
            for camera_id, camera in wanted.items():
                if camera_id not in self.sources:
                    if self.keeper is not None and not self._claim(camera_id, owned[camera_id]):
                        continue
                    try:
                        self._start_camera(camera)
                    except (SealError, KeyError, ValueError) as exc:
                        log.error("camera %s cannot start: %s", camera_id, exc)
                        continue
                    self._unrecovered.add(camera_id)
            self._recover_unpublished()

    def _recover_unpublished(self) -> None:
        """Publish what a camera's previous worker left in the database unpublished (killed between an
        alert's row and its publication), for the cameras started since the last successful try."""
        cameras = sorted(c for c in self._unrecovered if c in self.sources)
        if not cameras or self.pipeline is None:
            self._unrecovered.clear()
            return
        try:
            self.pipeline.republish_unpublished(cameras)
        except (redis.RedisError, SQLAlchemyError) as exc:
            log.warning("unpublished alerts of %d camera(s) not looked for (%s); again at the next change",
                        len(cameras), type(exc).__name__)  # fmt: skip
            return
        self._unrecovered.clear()

    def _claim(self, camera_id: str, token: int) -> bool:
        """Claim the camera's fence in the database before its source starts: from now on a worker that
        held it before (and may not know yet that it lost it) cannot write an alert for it.

        False when a higher token has claimed it already: either this lease is stale (the keeper finds out
        at its next tick), or Redis lost its latest writes and handed out a token the database has seen;
        then the camera's counter is raised past it and the lease given up, to come back with a higher
        token. A database that does not answer does not stop the camera: each alert claims it again."""
        assert self.db is not None and self.keeper is not None
        try:
            self.db.claim_fence(Fence(camera_id, self.worker_id, token))
        except StaleFence as exc:
            log.warning("%s; not starting it", exc)
            try:
                if exc.current is not None:
                    self.keeper.store.raise_fence(camera_id, exc.current.token)
                self.keeper.give_up(camera_id)
            except redis.RedisError as error:
                log.warning("camera %s: could not give the lease up (%s)", camera_id, error)
            return False
        except SQLAlchemyError as exc:
            log.warning("camera %s: lease token %d not recorded in the database (%s); starting anyway",
                        camera_id, token, type(exc).__name__)  # fmt: skip
        return True

    def _start_camera(self, camera: CameraRecord) -> None:
        assert self.box is not None
        s, ing = self.settings, self.settings.ingest
        url, record_url = camera_urls(camera, self.box)
        detection = camera_detection(camera)  # the config's for its cameras, the admin's for the API's
        self._places[camera.id] = CameraPlace(camera.village, camera.grid)
        self._rule_places[camera.id] = (camera.village, camera.grid)
        self._zones[camera.id] = {z.name: Zone(z.name, tuple(z.polygon)) for z in detection.zones}
        self._masks[camera.id] = [Zone(f"mask-{i}", tuple(m)) for i, m in enumerate(detection.masks)]
        self._thresholds[camera.id] = {
            label: LabelThreshold(t.min_score, t.min_area) for label, t in detection.thresholds.items()
        }
        masks = [*detection.masks, *detection.motion_masks]
        slot = FrameSlot()
        source = CameraSource(
            SourceConfig(
                camera_id=camera.id,
                url=self.resolve_url(url),
                record_url=self.resolve_url(record_url) if record_url else None,
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
            clip_dir=s.data_dir.resolve() / "clips-tmp",
            on_state=self._on_state,
            motion=MotionGate(mask=masks),
        )
        self.slots[camera.id] = slot
        self.sources[camera.id] = source
        self._running[camera.id] = camera
        source.start()
        log.info("camera %s started (%s, grid %s)", camera.id, redact_url(url), camera.grid)

    def _stop_camera(self, camera_id: str, why: str) -> None:
        """Stop pulling a camera (a clip being recorded is finished by the source's stop)."""
        source = self.sources.pop(camera_id)
        self.slots.pop(camera_id, None)
        self._running.pop(camera_id, None)
        source.stop()
        source.join(timeout=15)
        log.info("camera %s stopped (%s)", camera_id, why)

    def _on_state(self, change: StateChange) -> None:
        if self.collector is not None:
            self.collector.on_state(change)
        # A worker of many tells the others (and the camera wall) only about cameras it holds: one that gave
        # a camera away must not write "stopped" over the new owner's "online".
        if self.status is not None and self.holds(change.camera_id):
            self.status.publish(change)
        if change.stream == "detect" and change.new == StreamState.ONLINE:
            timer = threading.Timer(OBSERVE_PROBE_AFTER_S, self._observe_probe, (change.camera_id,))
            timer.daemon = True
            timer.start()

    def _observe_probe(self, camera_id: str) -> None:
        """A camera streaming for a few seconds without a probe of its own (imported in bulk, from the
        config, unreachable at registration) or with one it no longer matches: record what the stream
        shows, so the admin pages have its resolution and frame rate."""
        source, db = self.sources.get(camera_id), self.db
        if source is None or db is None or not self.holds(camera_id):
            return
        health = source.health()["detect"]
        try:
            camera = db.get_camera(camera_id)
            if camera is None or health.state != "online" or not wants_observed_probe(camera.probe, health):
                return
            db.set_camera_probe(camera_id, observed_probe(health), datetime.now(UTC))
        except (SQLAlchemyError, KeyError) as exc:
            log.warning("camera %s: stream figures not recorded (%s)", camera_id, type(exc).__name__)
            return
        log.info("camera %s: %s %dx%d at %.1f fps recorded as its probe (seen on the stream)", camera_id,
                 health.codec, health.width, health.height, health.input_fps)  # fmt: skip

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
        source = self.sources.get(camera_id)
        if source is None:
            log.warning("camera %s stopped before its clip could be asked for", camera_id)
            return
        source.hold_active(request.post_roll_s + self.settings.ingest.active_hold_s)
        source.request_clip(request)

    def camera_health(self, camera_id: str) -> dict[str, Any] | None:
        source = self.sources.get(camera_id)
        if source is None:
            return None
        return {role: dataclasses.asdict(h) for role, h in source.health().items()}

    def _start_api(self) -> None:
        assert self.db is not None and self.store is not None and self.box is not None
        assert self.collector is not None
        registry = make_registry(self.collector)
        registry.register(AlertSideCollector(lambda: self.dispatch_loop, lambda: self.outbox))
        sim = self.settings.simulator
        state = AppState(
            self.db,
            self.store,
            self.settings.s3.presign_seconds,
            self.camera_health,
            metrics=lambda: render(registry),
            settings=self.settings,
            publish=self.outbox.publish if self.outbox is not None else None,
            feed=self._start_feed(),
            registry=CameraRegistry(
                self.db,
                self.box,
                resolve_url=self.resolve_url,
                sim_mounts=[m.name for m in sim.cameras] if sim else [],
                live=self._local_frames(),
            ),
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
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=3,
            # json logs: uvicorn's loggers go through ours (one format, secrets masked)
            log_config=None if self.settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
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
        dispatcher = build_dispatcher(self.settings, self.db, self.bus.client, publish=self.bus.publish)
        self._stack.callback(dispatcher.close)
        self.dispatch_loop = build_dispatch_loop(self.settings, self.bus, dispatcher)
        self.dispatch_loop.start()
        self._stack.callback(self.dispatch_loop.stop)
        relay = build_status_relay(self.settings, self.bus, dispatcher)
        if relay is not None:
            relay.start()
            self._stack.callback(relay.stop)

    def _stop_sources(self) -> None:
        with self._reconcile_lock:
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
