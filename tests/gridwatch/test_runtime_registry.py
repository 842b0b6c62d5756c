"""A running worker follows the camera registry: a camera an admin registers through the API is pulled
within the poll interval (from the real RTSP server), an edit restarts it, disabling or deleting it stops
it; a camera dropped from the config is gone after the next start. The detector is a stand-in that sees
nothing (the detection path has its own end-to-end test); Redis, S3, RTSP and the API are real."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from detect.detections import Detections
from gridwatch.runtime import Runtime
from gridwatch.services import RedisServer, S3Server
from gridwatch.settings import Settings
from ingest.simulator.server import Mount, RtspSimulator
from storage.metadata import AlertRecord

NAMES = ("person",)


class SeesNothing:
    names = NAMES

    def detect(self, frame_bgr: np.ndarray) -> Detections:
        return Detections.empty(NAMES)

    def detect_batch(self, frames: list[np.ndarray]) -> list[Detections]:
        return [Detections.empty(NAMES) for _ in frames]


@pytest.fixture(scope="module")
def rtsp() -> Iterator[RtspSimulator]:
    simulator = RtspSimulator(
        [
            Mount(name="gate", kind="pattern", width=320, height=240, fps=10, gop=10),
            Mount(name="road", kind="pattern", width=320, height=240, fps=10, gop=10),
        ]
    )
    simulator.start()
    yield simulator
    simulator.stop()


def _settings(
    data_dir: Path, redis: RedisServer, s3: S3Server, keys: tuple[str, str], cameras: list[Any]
) -> Settings:
    return Settings.model_validate(
        {
            "data_dir": data_dir,
            "redis": {"url": redis.url},
            "s3": {
                "endpoint": s3.endpoint,
                "access_key": keys[0],
                "secret_key": keys[1],
                "bucket": "registry-run",
            },
            "api": {"port": 0},
            "ingest": {"registry_poll_s": 0.2},
            "villages": [{"id": "v1", "name": "V1"}],
            "grids": [{"id": "g1", "name": "G1", "village": "v1"}],
            "cameras": cameras,
        }
    )


def test_the_worker_follows_cameras_registered_changed_and_removed_through_the_api(
    tmp_path: Path,
    rtsp: RtspSimulator,
    redis_server: RedisServer,
    s3_server: S3Server,
    s3_keys: tuple[str, str],
    api_token: Callable[..., str],
    until: Callable[..., Any],
) -> None:
    config_camera = {"id": "cfg", "name": "Road", "village": "v1", "grid": "g1", "url": rtsp.url("road")}
    settings = _settings(tmp_path, redis_server, s3_server, s3_keys, [config_camera])
    runtime = Runtime(settings, detectors=[SeesNothing()]).start()
    try:
        assert runtime.db is not None
        assert set(runtime.sources) == {"cfg"}
        cfg = runtime.db.get_camera("cfg")
        assert cfg is not None and cfg.probe is None  # a config camera is not probed...

        def seen() -> dict[str, Any] | None:
            camera = runtime.db.get_camera("cfg") if runtime.db is not None else None
            return camera.probe if camera is not None else None

        # ...but what the worker sees on its stream becomes its probe
        until("the config camera's stream figures are recorded", lambda: seen() is not None, timeout=30)
        probe = seen()
        assert probe is not None and probe["observed"] and probe["ok"]
        assert (probe["width"], probe["height"], probe["video_codec"]) == (320, 240, "h264")
        assert 8 <= probe["fps_measured"] <= 12, probe  # the pattern runs at 10 fps
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{runtime.api_port}",
            headers={"Authorization": api_token(runtime.db, "ada", "admin")},
            timeout=30,
        )
        detection = {
            "zones": [{"name": "yard", "polygon": [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]]}],
            "thresholds": {"person": {"min_score": 0.7}},
        }
        body = {"id": "gate-1", "name": "Gate", "grid": "g1", "url": rtsp.url("gate"), "detection": detection}
        # a worker that held gate-1 before was killed between an alert's row and its publication
        at = datetime.now(UTC) - timedelta(seconds=30)
        orphan = AlertRecord("f" * 32, "gate-1", "v1", "g1", "person", 0.8, (1, 2, 3, 4), at, at)
        runtime.db.add_alert(orphan)
        r = api.post("/api/v1/cameras", json=body)
        assert r.status_code == 201 and r.json()["probe"]["ok"], r.text

        def online(camera: str) -> bool:
            health = runtime.camera_health(camera)
            return health is not None and health["detect"]["state"] == "online"

        until("the new camera is pulled", lambda: online("gate-1"), timeout=30)
        assert runtime.bus is not None  # the worker that starts it publishes what was left unpublished
        until(
            "the orphan is published",
            lambda: (orphan.id, "alert") in [(m.alert_id, m.kind) for _, m in runtime.bus.read_all()],
        )
        alerts_on_bus = [m.alert_id for _, m in runtime.bus.read_all() if m.kind == "alert"]
        assert alerts_on_bus == [orphan.id]  # once (its dispatcher then announces the incident it joined)
        # its zones and thresholds from the database are the ones the rules see
        assert (
            list(runtime._zones["gate-1"]) == ["yard"]
            and runtime._thresholds["gate-1"]["person"].min_score == 0.7
        )
        assert api.get("/api/v1/cameras/gate-1").json()["state"] == "online"
        picture = api.get("/api/v1/cameras/gate-1/frame")  # from the frames this process decodes
        assert picture.status_code == 200 and picture.headers["content-type"] == "image/jpeg"
        assert picture.headers["x-frame-source"] == "worker" and picture.headers["x-frame-width"] == "320"
        shown = api.get("/api/v1/cameras/cfg").json()["probe"]
        assert shown["observed"] is True and shown["width"] == 320
        assert api.get("/api/v1/cameras/gate-1").json()["probe"]["observed"] is False  # its own probe, kept
        first = runtime.sources["gate-1"]

        assert api.patch("/api/v1/cameras/gate-1", json={"detect_fps": 1}).status_code == 200
        until(
            "the edited camera restarts",
            lambda: runtime.sources.get("gate-1") not in (None, first),
            timeout=30,
        )
        assert runtime.sources["gate-1"].config.detect_fps == 1
        assert list(runtime._zones["gate-1"]) == ["yard"]  # an edit of another field keeps them
        second = runtime.sources["gate-1"]
        assert api.patch("/api/v1/cameras/gate-1", json={"detection": None}).status_code == 200
        until(
            "the camera restarts without zones", lambda: runtime.sources.get("gate-1") not in (None, second)
        )
        assert runtime._zones["gate-1"] == {} and runtime._thresholds["gate-1"] == {}
        assert not first.is_alive()

        assert api.patch("/api/v1/cameras/gate-1", json={"enabled": False}).status_code == 200
        until("the disabled camera stops", lambda: "gate-1" not in runtime.sources, timeout=30)
        picture = api.get("/api/v1/cameras/gate-1/frame")  # nobody pulls it: a session of the API's own
        assert picture.status_code == 200 and picture.headers["x-frame-source"] == "camera"
        assert api.patch("/api/v1/cameras/gate-1", json={"enabled": True}).status_code == 200
        until("the enabled camera starts again", lambda: online("gate-1"), timeout=30)
        assert api.delete("/api/v1/cameras/gate-1").status_code == 204
        until("the deleted camera stops", lambda: "gate-1" not in runtime.sources, timeout=30)
        assert set(runtime.sources) == {"cfg"} and runtime.camera_watcher is not None
        assert runtime.camera_watcher.reloads >= 4
    finally:
        runtime.stop()

    # the config no longer names "cfg": the next start forgets it, and keeps what the API registered
    restarted = Runtime(_settings(tmp_path, redis_server, s3_server, s3_keys, []), detectors=[SeesNothing()])
    restarted.start()
    try:
        assert restarted.db is not None
        assert [c.id for c in restarted.db.list_cameras()] == [] and restarted.sources == {}
    finally:
        restarted.stop()
