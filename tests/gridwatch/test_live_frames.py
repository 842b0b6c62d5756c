"""A camera's picture from the process that already decodes it (gridwatch/live_frames.py): the next frame of
its slot, locally or through a worker's frame server on a real Redis; None whenever nobody can give it, so
the registry falls back to a session of its own."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import redis

from gridwatch.camera_registry import CameraFields, CameraRegistry
from gridwatch.cluster import ClusterKeys, lease_value
from gridwatch.live_frames import FrameServer, LocalFrames, RedisFrames
from gridwatch.sealing import SecretBox, new_key
from gridwatch.services import RedisServer
from ingest.frame_grab import FrameGrab
from ingest.frames import Frame, FrameSlot
from ingest.ports import free_port
from storage.metadata import GridRecord, MetadataDB, VillageRecord

WIDTH, HEIGHT = 1600, 900  # wider than the JPEG's 1280: shrunk, the camera's size still reported


def _picture(colour: tuple[int, int, int] = (0, 0, 255)) -> np.ndarray:
    image = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    image[:, :] = colour
    return image


class Feeder:
    """Puts a frame into the slot every `every` seconds, as a camera source does."""

    def __init__(self, slot: FrameSlot, every: float = 0.2) -> None:
        self.slot, self.every = slot, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.put = 0

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.put += 1
            self.slot.put(Frame("cam", _picture(), self.put * self.every, time.time(), 1, self.put))

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _jpeg_colour(grabbed: FrameGrab) -> tuple[int, int, int]:
    assert grabbed.jpeg is not None
    image = cv2.imdecode(np.frombuffer(grabbed.jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    assert image.shape[:2] == (720, 1280)
    b, g, r = (int(v) for v in image[360, 640])
    return b, g, r


def test_the_next_frame_of_a_running_camera_is_its_picture() -> None:
    slot = FrameSlot()
    with Feeder(slot):
        grabbed = LocalFrames({"cam": slot}, wait_s=3).grab("cam")
    assert grabbed is not None and grabbed.ok and grabbed.source == "worker"
    assert (grabbed.width, grabbed.height) == (WIDTH, HEIGHT)
    b, g, r = _jpeg_colour(grabbed)
    assert r > 240 and b < 15 and g < 15
    frame = slot.take()  # the detector still gets the frame: the capture is beside the delivery
    assert frame is not None and frame.camera_id == "cam"


def test_no_frame_in_time_or_no_such_camera_is_none_and_leaves_no_capture() -> None:
    slot = FrameSlot()
    frames = LocalFrames({"cam": slot}, wait_s=0.2)
    assert frames.grab("other") is None
    assert frames.grab("cam") is None  # the camera decodes nothing (offline)
    calls: list[Frame] = []
    slot.capture_next(calls.append)
    slot.put(Frame("cam", _picture(), 0.0, time.time(), 1, 1))
    assert len(calls) == 1  # only the capture registered after the timed-out one was left


def test_a_capture_is_called_once() -> None:
    slot = FrameSlot()
    calls: list[int] = []
    slot.capture_next(lambda f: calls.append(f.seq))
    for seq in (1, 2):
        slot.put(Frame("cam", _picture(), 0.0, time.time(), 1, seq))
    assert calls == [1]


@pytest.fixture
def served(redis_server: RedisServer) -> Iterator[tuple[redis.Redis, ClusterKeys, FrameSlot, FrameServer]]:
    client = redis.Redis.from_url(redis_server.url)
    keys = ClusterKeys(f"lf{time.monotonic_ns()}")
    slot = FrameSlot()
    server = FrameServer(client, "w1", LocalFrames({"cam": slot}, wait_s=0.5), keys)
    server.start()
    assert server.wait_subscribed(10)
    yield client, keys, slot, server
    server.stop()
    client.close()


def test_the_api_gets_the_picture_from_the_worker_that_holds_the_lease(
    served: tuple[redis.Redis, ClusterKeys, FrameSlot, FrameServer],
) -> None:
    client, keys, slot, server = served
    client.set(keys.lease("cam"), lease_value("w1", 7), px=60_000)
    with Feeder(slot):
        grabbed = RedisFrames(client, keys, wait_s=5).grab("cam", max_width=640)
    assert grabbed is not None and grabbed.ok and grabbed.source == "worker", grabbed
    assert (grabbed.width, grabbed.height) == (WIDTH, HEIGHT)
    assert grabbed.jpeg is not None
    assert cv2.imdecode(np.frombuffer(grabbed.jpeg, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (360, 640)
    assert server.answered == 1
    assert client.keys(keys.frame_reply("*")) == []  # the answer was taken: nothing left behind


def test_none_when_nobody_can_give_the_picture(
    served: tuple[redis.Redis, ClusterKeys, FrameSlot, FrameServer],
) -> None:
    client, keys, _slot, server = served
    frames = RedisFrames(client, keys, wait_s=5)
    assert frames.grab("cam") is None  # no lease: no worker runs the camera

    client.set(keys.lease("cam"), lease_value("w-gone", 3), px=60_000)
    started = time.monotonic()
    assert frames.grab("cam") is None  # its worker does not listen: no wait for an answer
    assert time.monotonic() - started < 2.5, "waited for an answer that nobody could send"

    client.set(keys.lease("cam"), lease_value("w1", 4), px=60_000)
    assert frames.grab("cam") is None  # the worker answers that it has no picture (no frame came)
    assert server.answered == 1

    client.set(keys.lease("cam"), "not-a-lease", px=60_000)
    assert frames.grab("cam") is None

    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.5)
    assert RedisFrames(dead, keys).grab("cam") is None  # Redis away: the API opens its own session


def test_the_frame_server_ignores_bad_requests_and_goes_on(
    served: tuple[redis.Redis, ClusterKeys, FrameSlot, FrameServer], until: Callable[..., Any]
) -> None:
    client, keys, slot, server = served
    channel = keys.frame_requests("w1")
    client.publish(channel, b"\xff not json")
    client.publish(channel, json.dumps({"camera": "cam"}))
    outside = "elsewhere:key"
    client.publish(channel, json.dumps({"camera": "cam", "reply": outside}))
    client.set(keys.lease("cam"), lease_value("w1", 9), px=60_000)
    with Feeder(slot):
        grabbed = RedisFrames(client, keys, wait_s=5).grab("cam")
    assert grabbed is not None and grabbed.ok
    assert server.answered == 1 and server.is_alive()
    assert client.exists(outside) == 0  # nothing written outside the cluster's keys


def _registry(tmp_path: Path, live: Any, grabbed: list[str]) -> CameraRegistry:
    db = MetadataDB(f"sqlite:///{tmp_path / 'reg.db'}")
    db.migrate()
    db.upsert_villages([VillageRecord(id="v1", name="V1")])
    db.upsert_grids([GridRecord(id="g1", name="G1", village_id="v1")])

    def grabber(url: str) -> FrameGrab:
        grabbed.append(url)
        return FrameGrab(ok=True, jpeg=b"\xff\xd8own", width=320, height=240, source="camera")

    registry = CameraRegistry(db, SecretBox(new_key()), grabber=grabber, live=live)
    fields = CameraFields(id="cam", name="Cam", grid="g1", url="rtsp://10.0.0.9/s")
    registry.register(fields, probe=False, at=datetime.now(UTC))
    return registry


def test_the_registry_asks_the_worker_first_and_opens_a_session_only_without_an_answer(
    tmp_path: Path,
) -> None:
    worker_picture = FrameGrab(ok=True, jpeg=b"\xff\xd8w", width=640, height=480, source="worker")

    class Live:
        answer: FrameGrab | None = worker_picture

        def grab(self, camera_id: str, max_width: int = 1280) -> FrameGrab | None:
            return self.answer

    live, grabbed = Live(), []
    registry = _registry(tmp_path, live, grabbed)
    assert registry.frame("cam") is worker_picture and grabbed == []
    live.answer = None
    assert registry.frame("cam").source == "camera" and grabbed == ["rtsp://10.0.0.9/s"]
    with pytest.raises(KeyError):
        registry.frame("nobody")
