"""Real servers on free 127.0.0.1 ports for tests of notifiers and of whatever drives them (the dispatcher).

Nothing here is used at run time; it lives in the package so that tests anywhere can import it.
- `HttpReceiver`: a threaded HTTP server that records every request and answers from a script of `Reply`s,
  then from a responder function (default 200 "ok"); `accepted` holds the requests answered 2xx.
- `MosquittoServer`: a real Mosquitto broker (default /usr/sbin/mosquitto), no persistence, anonymous access;
  `stop()` and `start()` again on the same port for outage tests.
- `MqttSubscriber`: a paho client subscribed to topics, collecting messages.
- `WebPushTestingServer`: the npm `web-push-testing` push service (node, kept on 127.0.0.1 by a preload), with
  its subscribe / get-notifications / expire-subscription API.
A missing binary raises FileNotFoundError (tests must fail, not skip).
"""

from __future__ import annotations

import json
import os
import pwd
import queue
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ingest import ports

REPO = Path(__file__).resolve().parents[2]
MOSQUITTO = os.environ.get("GRIDWATCH_MOSQUITTO", "/usr/sbin/mosquitto")
WEB_PUSH_TESTING = Path(
    os.environ.get(
        "GRIDWATCH_WEB_PUSH_TESTING", REPO / ".cache" / "node" / "node_modules" / "web-push-testing"
    )
)
# Preload (`node -r`): every server.listen(port, ...) in the process binds 127.0.0.1 only.
LOOPBACK_PRELOAD = """'use strict';
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const first = args[0];
  if (typeof first === 'number' || (typeof first === 'string' && /^\\d+$/.test(first))) {
    const callback = args.find(arg => typeof arg === 'function');
    return listen.call(this, {port: Number(first), host: '127.0.0.1'}, callback);
  }
  if (first && typeof first === 'object' && !Array.isArray(first) && 'port' in first) {
    args[0] = {...first, host: '127.0.0.1'};
  }
  return listen.apply(this, args);
};
"""


def free_port() -> int:
    return ports.free_port()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


# HTTP receiver ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | str | dict[str, Any] = b"ok"
    delay_s: float = 0.0  # answer late (for timeout tests)


Responder = Callable[[ReceivedRequest], Reply]


class HttpReceiver:
    """Records requests; answers the next scripted `Reply` if any, else `responder(request)`."""

    def __init__(self, responder: Responder | None = None) -> None:
        self.responder: Responder = responder or (lambda _request: Reply())
        self.requests: list[ReceivedRequest] = []
        self.accepted: list[ReceivedRequest] = []  # those answered 2xx
        self._script: queue.Queue[Reply] = queue.Queue()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._handle(self)

            do_GET = do_PUT = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="http-receiver", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: Reply) -> None:
        for reply in replies:
            self._script.put(reply)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        parts = urlsplit(handler.path)
        request = ReceivedRequest(
            method=handler.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
        )
        try:
            reply = self._script.get_nowait()
        except queue.Empty:
            reply = self.responder(request)
        with self._lock:
            self.requests.append(request)
            if 200 <= reply.status < 300:
                self.accepted.append(request)
        if reply.delay_s:
            time.sleep(reply.delay_s)
        payload = reply.body
        content_type = "text/plain"
        if isinstance(payload, dict):
            payload, content_type = json.dumps(payload).encode(), "application/json"
        elif isinstance(payload, str):
            payload = payload.encode()
        try:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout tests)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()


# Mosquitto -------------------------------------------------------------------------------------------------


class MosquittoServer:
    """A Mosquitto broker on 127.0.0.1. `stop()`/`start()` again reuse the port (outage tests)."""

    host = "127.0.0.1"

    def __init__(self, directory: Path, port: int | None = None, binary: str = MOSQUITTO) -> None:
        if not Path(binary).is_file():
            raise FileNotFoundError(f"mosquitto not found at {binary}: run `bash scripts/setup.sh`")
        self.directory = directory
        self.binary = binary
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        conf = self.directory / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stderr\n"
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
        )
        log = (self.directory / "mosquitto.log").open("ab")
        self.process = subprocess.Popen([self.binary, "-c", str(conf)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if self.process.poll() is not None:
                text = (self.directory / "mosquitto.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"mosquitto exited ({self.process.returncode}):\n{text}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mosquitto not listening on {self.port} after {timeout}s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None

    def __enter__(self) -> Self:
        for attempt in range(3):  # another process may take the free port between probe and bind
            try:
                self.start()
                return self
            except RuntimeError:
                if attempt == 2:
                    raise
                self.port = free_port()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class MqttMessage:
    topic: str
    payload: bytes
    retain: bool
    qos: int

    def json(self) -> Any:
        return json.loads(self.payload)


class MqttSubscriber:
    """A paho client subscribed to `topics` (QoS 1); messages land in `messages` (a queue)."""

    def __init__(self, port: int, topics: list[str], host: str = "127.0.0.1") -> None:
        self.messages: queue.Queue[MqttMessage] = queue.Queue()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-sub-{time.monotonic_ns()}")
        self._client.on_connect = lambda client, *_: client.subscribe([(t, 1) for t in topics])
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = lambda _c, _u, m: self.messages.put(
            MqttMessage(m.topic, bytes(m.payload), bool(m.retain), int(m.qos))
        )
        self._host, self._port = host, port

    def get(self, timeout: float = 5.0, topic: str | None = None) -> MqttMessage:
        """The next message (on `topic`, if given; others are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no MQTT message{' on ' + topic if topic else ''} within {timeout}s")
            try:
                message = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            if topic is None or message.topic == topic:
                return message

    def __enter__(self) -> Self:
        self._client.connect(self._host, self._port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(5):
            raise RuntimeError("test subscriber did not get a SUBACK")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._client.disconnect()
        self._client.loop_stop()


# web-push-testing ------------------------------------------------------------------------------------------


class WebPushTestingServer:
    """npm `web-push-testing` run as `node -r loopback_listen.js src/bin/server.js PORT` (its `start` command
    would detach a child; the preload keeps it off other interfaces). It checks VAPID, decrypts payloads and
    keeps them per subscription. Needs node and the package (scripts/setup.sh installs it in .cache/node)."""

    def __init__(self, directory: Path, package_dir: Path = WEB_PUSH_TESTING) -> None:
        node = shutil.which("node")
        if node is None:
            raise FileNotFoundError("node not found: run `bash scripts/setup.sh`")
        self.node = node
        self.script = package_dir / "src" / "bin" / "server.js"
        if not self.script.is_file():
            raise FileNotFoundError(
                f"web-push-testing not installed in {package_dir}: run `bash scripts/setup.sh`"
            )
        self.directory = directory
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        self.port = free_port()
        preload = self.directory / "loopback_listen.js"
        preload.write_text(LOOPBACK_PRELOAD)
        log = (self.directory / "web-push-testing.log").open("ab")
        self.process = subprocess.Popen(
            [self.node, "-r", str(preload), str(self.script), str(self.port)],
            cwd=self.directory,
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                text = (self.directory / "web-push-testing.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"web-push-testing exited ({self.process.returncode}):\n{text}")
            try:
                if self._http.post(f"{self.url}/status").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"web-push-testing not answering on {self.port} after {timeout}s")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None

    def subscribe(self, application_server_key: str | None) -> dict[str, Any]:
        """A new subscription: {"endpoint", "keys": {"p256dh", "auth"}, "clientHash"}. The endpoint names
        "localhost" (hard-coded in the package); it is rewritten to 127.0.0.1, where the server listens."""
        options = {"applicationServerKey": application_server_key} if application_server_key else {}
        response = self._http.post(f"{self.url}/subscribe", json=options)
        response.raise_for_status()
        data: dict[str, Any] = response.json()["data"]
        data["endpoint"] = data["endpoint"].replace("http://localhost:", "http://127.0.0.1:", 1)
        return data

    def notifications(self, client_hash: str) -> list[str]:
        """Decrypted payloads received for a subscription, oldest first."""
        response = self._http.post(f"{self.url}/get-notifications", json={"clientHash": client_hash})
        response.raise_for_status()
        return list(response.json()["data"]["messages"])

    def expire(self, client_hash: str) -> None:
        self._http.post(f"{self.url}/expire-subscription/{client_hash}").raise_for_status()

    def __enter__(self) -> Self:
        for attempt in range(3):
            try:
                self.start()
                return self
            except RuntimeError:
                if attempt == 2:
                    raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        self._http.close()
