"""A camera's picture from the worker that already pulls it, so that looking at a camera (the zone editor,
"View now" on the camera wall) opens no second RTSP session: many village cameras allow one or two.

- `LocalFrames`: in the process that runs the camera (`gridwatch run`, or a worker), the next frame its
  source decodes (a still camera decodes a keyframe every 2 s, a moving one every frame), as a JPEG.
- `FrameServer`: a worker's thread that answers requests for the cameras it runs. A request is published
  on `{prefix}:frames:{worker}` (JSON: camera, reply key, max width); the answer is pushed to the reply
  key (`{prefix}:frame:{request}`, kept 10 s): the camera's width and height on a line, then the JPEG; an
  empty value when the worker has no picture.
- `RedisFrames`: the API's side. It reads the camera's lease to find its worker, publishes the request and
  waits for the answer. None when nobody holds the camera, the worker is not listening or does not answer
  in time: the caller then opens a session of its own (`ingest.frame_grab`).

Pictures travel only on request; nothing is stored. The reply key is random (128 bits) and short-lived.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import redis

from gridwatch.cluster.keys import DEFAULT_KEYS, ClusterKeys
from gridwatch.cluster.leases import parse_lease_value
from ingest.frame_grab import MAX_WIDTH, FrameGrab, encode_picture
from ingest.frames import Frame, FrameSlot

log = logging.getLogger(__name__)

WAIT_S = 3.0  # a still camera's source decodes a keyframe every 2 s
REPLY_TTL_S = 10


class LiveFrames(Protocol):
    def grab(self, camera_id: str, max_width: int = MAX_WIDTH) -> FrameGrab | None:
        """The camera's picture from the process that runs it, or None when none can give it."""
        ...


class LocalFrames:
    """The next frame of a camera this process runs, from its frame slot."""

    def __init__(self, slots: Mapping[str, FrameSlot], wait_s: float = WAIT_S) -> None:
        self.slots = slots
        self.wait_s = wait_s

    def grab(self, camera_id: str, max_width: int = MAX_WIDTH) -> FrameGrab | None:
        slot = self.slots.get(camera_id)
        if slot is None:
            return None
        started = time.monotonic()
        got: list[Frame] = []
        arrived = threading.Event()

        def capture(frame: Frame) -> None:
            got.append(frame)
            arrived.set()

        slot.capture_next(capture)
        if not arrived.wait(self.wait_s):
            slot.cancel_capture(capture)
            return None
        return encode_picture(got[0].image, max_width, started, source="worker")


class FrameServer(threading.Thread):
    """Answers picture requests for the cameras of `frames` on this worker's channel, one at a time."""

    def __init__(
        self,
        client: redis.Redis,
        worker_id: str,
        frames: LiveFrames,
        keys: ClusterKeys = DEFAULT_KEYS,
        retry_s: float = 1.0,
    ) -> None:
        super().__init__(name="frame-server", daemon=True)
        self.client = client
        self.worker_id = worker_id
        self.frames = frames
        self.keys = keys
        self.retry_s = retry_s
        self.answered = 0
        self._stop_event = threading.Event()
        self._subscribed = threading.Event()

    def wait_subscribed(self, timeout: float) -> bool:
        """Whether Redis confirmed the subscription within `timeout` seconds."""
        return self._subscribed.wait(timeout)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def run(self) -> None:
        channel = self.keys.frame_requests(self.worker_id)
        while not self._stop_event.is_set():
            pubsub = self.client.pubsub()
            try:
                pubsub.subscribe(channel)
                while not self._stop_event.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is None:
                        continue
                    if message.get("type") == "subscribe":  # Redis confirmed: requests reach us now
                        self._subscribed.set()
                    elif message.get("type") == "message":
                        self._answer(message.get("data"))
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self._subscribed.clear()
                log.warning("frame requests: Redis did not answer (%s); retrying", type(exc).__name__)
                self._stop_event.wait(self.retry_s)
            finally:
                with contextlib.suppress(redis.RedisError):
                    pubsub.close()

    def _answer(self, data: Any) -> None:
        try:
            request = json.loads(data)
            camera_id, reply = str(request["camera"]), str(request["reply"])
            max_width = max(16, min(int(request.get("max_width", MAX_WIDTH)), 4096))
        except (TypeError, ValueError, KeyError):
            log.warning("frame requests: ignored a request that does not parse")
            return
        if not reply.startswith(self.keys.frame_reply("")):
            log.warning("frame requests: ignored a reply key outside %s", self.keys.frame_reply("*"))
            return
        answer = _reply(self.frames.grab(camera_id, max_width))
        self.answered += 1  # counted before the requester can see the answer
        pipe = self.client.pipeline(transaction=True)
        pipe.rpush(reply, answer)
        pipe.expire(reply, REPLY_TTL_S)
        pipe.execute()


class RedisFrames:
    """Asks the worker that holds a camera's lease for its picture."""

    def __init__(
        self,
        client: redis.Redis,
        keys: ClusterKeys = DEFAULT_KEYS,
        wait_s: float = WAIT_S + 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.keys = keys
        self.wait_s = wait_s
        self.clock = clock

    def grab(self, camera_id: str, max_width: int = MAX_WIDTH) -> FrameGrab | None:
        started = self.clock()
        try:
            owner = _owner(self.client.get(self.keys.lease(camera_id)))
            if owner is None:
                return None
            reply = self.keys.frame_reply(secrets.token_hex(16))
            request = json.dumps({"camera": camera_id, "reply": reply, "max_width": max_width})
            if self.client.publish(self.keys.frame_requests(owner), request) == 0:
                return None  # the worker is not listening (an older version, or it is going away)
            answer = self.client.blpop([reply], timeout=self.wait_s)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.info("frame of %s: Redis did not answer (%s)", camera_id, type(exc).__name__)
            return None
        if not answer or not isinstance(answer[1], bytes) or not answer[1]:
            return None  # no answer, no picture, or a client that decodes replies as text
        return _decoded(answer[1], started, self.clock())


def _owner(value: Any) -> str | None:
    try:
        parsed = parse_lease_value(value)
    except ValueError:
        return None
    return parsed[0] if parsed else None


def _reply(grabbed: FrameGrab | None) -> bytes:
    """The answer's bytes: `"{width} {height}\n"` (the camera's size) and the JPEG; empty for none."""
    if grabbed is None or not grabbed.ok or not grabbed.jpeg:
        return b""
    return f"{grabbed.width} {grabbed.height}\n".encode() + grabbed.jpeg


def _decoded(answer: bytes, started: float, now: float) -> FrameGrab | None:
    """A worker's answer as a FrameGrab; None when it does not parse."""
    head, _, jpeg = answer.partition(b"\n")
    try:
        width, height = (int(n) for n in head.split())
    except ValueError:
        return None
    if not jpeg.startswith(b"\xff\xd8") or width <= 0 or height <= 0:
        return None
    return FrameGrab(ok=True, jpeg=jpeg, width=width, height=height, elapsed_s=now - started, source="worker")
