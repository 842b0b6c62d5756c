#!/usr/bin/python3
"""Serve simulated RTSP cameras on 127.0.0.1 with GStreamer's gst-rtsp-server.

Runs under the SYSTEM python (it needs ``gi``), not the project venv: ``server.py`` starts it as a
subprocess. Reads a JSON spec from the file named by argv[1], or from stdin when there is no argument
or it is ``-``::

    {"port": 0, "mounts": [
        {"name": "cam1", "kind": "file", "path": "/x/people.mp4", "loop": false},
        {"name": "cam2", "kind": "pattern", "width": 640, "height": 360, "fps": 10, "gop": 10,
         "username": "admin", "password": "secret"}]}

Prints exactly one line ``READY <port>`` on stdout once listening, and exits cleanly on SIGTERM/SIGINT.

Mount kinds:
- ``file``: an H.264 MP4 replayed without re-encoding, paced in real time; every client gets its own
  replay from the start and the stream ends at the end of the file.
- ``file`` with ``loop``: an ``ffmpeg -re -stream_loop -1 ... -c copy`` child publishes MPEG-TS to a
  local UDP port that the mount relays; one shared stream, like a live camera (clients join mid-stream).
- ``pattern``: a live ``videotestsrc`` encoded by x264 at the given size, fps and keyframe interval.

A mount with ``username`` and ``password`` requires RTSP basic or digest auth; others are open.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

HOST = "127.0.0.1"
ANONYMOUS_ROLE = "anonymous"
PR_SET_PDEATHSIG = 1


def _quote(value: str) -> str:
    """Quote a string for gst-launch syntax."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Child preexec: get SIGKILL when this server dies, even if it is killed with -9."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _offer_basic_and_digest(auth: GstRtspServer.RTSPAuth) -> None:
    """Offer both Basic and Digest challenges.

    The methods are a bit mask in C but a plain enum in the bindings, which refuse BASIC | DIGEST, so this
    calls the C function directly; if that fails the server keeps its default (Basic only).
    """
    try:
        capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
        capsule_pointer.restype = ctypes.c_void_p
        capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
        library = ctypes.CDLL("libgstrtspserver-1.0.so.0")
        library.gst_rtsp_auth_set_supported_methods.argtypes = [ctypes.c_void_p, ctypes.c_int]
        methods = int(GstRtsp.RTSPAuthMethod.BASIC) | int(GstRtsp.RTSPAuthMethod.DIGEST)
        library.gst_rtsp_auth_set_supported_methods(capsule_pointer(auth.__gpointer__, None), methods)
    except (OSError, AttributeError, ValueError) as error:
        print(f"gst_rtsp_serve: digest auth not enabled ({error}); Basic only", file=sys.stderr)


class Simulator:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.server = GstRtspServer.RTSPServer()
        self.server.set_address(HOST)
        self.server.set_service(str(int(spec.get("port", 0))))
        # The default pool has 10 client threads, and a client that asks for a live mount waits in its thread
        # until the mount's pipeline has prerolled: with more than 10 cameras connecting at once, the rest
        # timed out (seen with 32 looping mounts). With more mounts than that, a thread per client. Only
        # then: with the larger pool, a client that reconnects to a shared mount being torn down, or to a
        # server just resumed from SIGSTOP, got 503 (tests/ingest/test_simulator.py, 2 of 12 in CI).
        if len(spec["mounts"]) > 10:
            self.server.get_thread_pool().set_max_threads(2 * len(spec["mounts"]))
        self.children: list[subprocess.Popen[bytes]] = []
        self.auth = GstRtspServer.RTSPAuth()
        _offer_basic_and_digest(self.auth)
        anonymous = GstRtspServer.RTSPToken()
        anonymous.set_string("media.factory.role", ANONYMOUS_ROLE)
        self.auth.set_default_token(anonymous)
        self.credential_roles: dict[tuple[str, str], str] = {}
        for mount in spec["mounts"]:
            if mount.get("username") is not None or mount.get("password") is not None:
                self._credential_role(str(mount.get("username") or ""), str(mount.get("password") or ""))
        mounts = self.server.get_mount_points()
        for mount in spec["mounts"]:
            if mount["kind"] == "file" and not os.path.isfile(str(mount.get("path"))):
                raise FileNotFoundError(f"mount {mount['name']!r}: no such file {mount.get('path')!r}")
            mounts.add_factory("/" + mount["name"].strip("/"), self._factory(mount))
        self.server.set_auth(self.auth)

    def _factory(self, mount: dict[str, Any]) -> GstRtspServer.RTSPMediaFactory:
        factory = GstRtspServer.RTSPMediaFactory()
        kind = mount["kind"]
        if kind == "pattern":
            launch, shared = self._pattern_launch(mount), True
        elif kind == "file" and mount.get("loop"):
            launch, shared = self._loop_launch(mount), True
        elif kind == "file":
            launch, shared = self._file_launch(mount), False
        else:
            raise ValueError(f"unknown mount kind {kind!r}")
        factory.set_launch(launch)
        factory.set_shared(shared)
        factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP)
        factory.set_permissions(self._permissions(mount))
        return factory

    def _permissions(self, mount: dict[str, Any]) -> GstRtspServer.RTSPPermissions:
        """Open mounts: anyone may construct, with or without (any) credentials. Mounts with credentials:
        anyone may *access* (so an unknown client gets 401 with a challenge rather than 404), only the
        credential's role may *construct*."""
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role(ANONYMOUS_ROLE, "media.factory.access", True)
        username, password = mount.get("username"), mount.get("password")
        if username is None and password is None:
            for role in (ANONYMOUS_ROLE, *self.credential_roles.values()):
                permissions.add_permission_for_role(role, "media.factory.access", True)
                permissions.add_permission_for_role(role, "media.factory.construct", True)
        else:
            role = self._credential_role(str(username or ""), str(password or ""))
            permissions.add_permission_for_role(role, "media.factory.access", True)
            permissions.add_permission_for_role(role, "media.factory.construct", True)
        return permissions

    def _credential_role(self, username: str, password: str) -> str:
        """One role per distinct (user, password); mounts sharing credentials share the role."""
        key = (username, password)
        if key not in self.credential_roles:
            role = f"user{len(self.credential_roles)}"
            self.credential_roles[key] = role
            token = GstRtspServer.RTSPToken()
            token.set_string("media.factory.role", role)
            self.auth.add_basic(GstRtspServer.RTSPAuth.make_basic(username, password), token)
            self.auth.add_digest(username, password, token)
        return self.credential_roles[key]

    @staticmethod
    def _pattern_launch(mount: dict[str, Any]) -> str:
        width, height = int(mount.get("width", 640)), int(mount.get("height", 360))
        fps, gop = int(mount.get("fps", 10)), int(mount.get("gop", 10))
        return (
            f"( videotestsrc is-live=true ! video/x-raw,width={width},height={height},framerate={fps}/1 "
            f"! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast bframes=0 key-int-max={gop} "
            "! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1 )"
        )

    @staticmethod
    def _file_launch(mount: dict[str, Any]) -> str:
        return (
            f"( filesrc location={_quote(str(mount['path']))} ! qtdemux ! h264parse "
            "! rtph264pay name=pay0 pt=96 config-interval=1 )"
        )

    def _loop_launch(self, mount: dict[str, Any]) -> str:
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise RuntimeError("a looping file mount needs ffmpeg on PATH (Debian package 'ffmpeg')")
        port = _free_udp_port()
        command = [
            ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1",
            "-i", str(mount["path"]), "-map", "0:v:0", "-c", "copy",
            # Without these, tsdemux hands out packets whose timestamps run backwards inside each GOP.
            "-muxdelay", "0", "-muxpreload", "0", "-f", "mpegts",
            f"udp://{HOST}:{port}?pkt_size=1316",
        ]  # fmt: skip
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self.children.append(child)
        GLib.child_watch_add(GLib.PRIORITY_DEFAULT, child.pid, self._child_exited, mount["name"])
        return (
            f"( udpsrc address={HOST} port={port} buffer-size=4194304 "
            'caps="video/mpegts,systemstream=(boolean)true,packetsize=(int)188" '
            "! queue ! tsdemux latency=0 ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )"
        )

    def _child_exited(self, pid: int, status: int, name: str) -> None:
        for child in self.children:
            if child.pid == pid:
                child.returncode = os.waitstatus_to_exitcode(status)
        message = f"gst_rtsp_serve: ffmpeg publisher of mount {name!r} exited (wait status {status})"
        print(message, file=sys.stderr, flush=True)

    def run(self) -> None:
        loop = GLib.MainLoop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, self._quit, loop)
        # A test or benchmark killed without cleanup must not leave its cameras running (and using CPU):
        # once the process that started us is gone (we are re-parented), stop.
        parent = os.getppid()
        GLib.timeout_add_seconds(
            1, lambda: self._quit(loop) if os.getppid() != parent else GLib.SOURCE_CONTINUE
        )
        if self.server.attach(None) == 0:
            raise RuntimeError(f"could not listen on {HOST}:{self.server.get_service()}")
        print(f"READY {self.server.get_bound_port()}", flush=True)
        try:
            loop.run()
        finally:
            self.stop_children()

    @staticmethod
    def _quit(loop: GLib.MainLoop) -> bool:
        loop.quit()
        return GLib.SOURCE_REMOVE

    def stop_children(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.terminate()
        for child in self.children:
            try:
                child.wait(timeout=3)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _read_spec(argv: list[str]) -> dict[str, Any]:
    if len(argv) > 1 and argv[1] != "-":
        with open(argv[1], encoding="utf-8") as handle:
            return dict(json.load(handle))
    return dict(json.load(sys.stdin))


def main(argv: list[str]) -> int:
    Gst.init(None)
    simulator: Simulator | None = None
    try:
        simulator = Simulator(_read_spec(argv))
        simulator.run()
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        print(f"gst_rtsp_serve: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        return 2
    finally:
        if simulator is not None:
            simulator.stop_children()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
