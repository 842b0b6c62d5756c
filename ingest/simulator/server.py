"""Simulated RTSP cameras for tests and demos: a gst-rtsp-server subprocess driven from the venv.

GStreamer's RTSP server is reachable only from the system python (it needs ``gi``), so this module runs
``gst_rtsp_serve.py`` under that interpreter, in its own process group, and talks to it through a JSON
spec on stdin and a ``READY <port>`` line on stdout. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Self
from urllib.parse import quote

SERVE_SCRIPT = Path(__file__).with_name("gst_rtsp_serve.py")
HOST = "127.0.0.1"
STOP_GRACE_S = 5.0


@dataclass(frozen=True, slots=True)
class Mount:
    """One simulated camera, served at ``rtsp://127.0.0.1:<port>/<name>``.

    ``file``: ``path`` is an H.264 MP4 replayed without re-encoding in real time; each client starts from the
    beginning and the stream ends with the file, unless ``loop`` (then one shared, endless live stream that
    clients join mid-way, like a real camera). ``pattern``: a live test pattern encoded at ``width`` x
    ``height``, ``fps``, one keyframe every ``gop`` frames. With ``username`` and ``password`` the mount
    requires RTSP Basic or Digest auth.
    """

    name: str
    kind: Literal["file", "pattern"]
    path: Path | None = None
    loop: bool = False
    width: int = 640
    height: int = 360
    fps: int = 10
    gop: int = 10
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.strip() != self.name:
            raise ValueError(f"mount name must be one plain path segment, got {self.name!r}")
        if self.kind not in ("file", "pattern"):
            raise ValueError(f"mount {self.name!r}: unknown kind {self.kind!r}")
        if self.kind == "file" and (self.path is None or not Path(self.path).is_file()):
            raise ValueError(f"mount {self.name!r}: file mount needs an existing path, got {self.path!r}")
        if min(self.width, self.height, self.fps, self.gop) <= 0:
            raise ValueError(f"mount {self.name!r}: width, height, fps and gop must be positive")
        if (self.username is None) != (self.password is None):
            raise ValueError(f"mount {self.name!r}: give both username and password, or neither")

    @property
    def has_auth(self) -> bool:
        return self.username is not None

    def spec(self) -> dict[str, Any]:
        """The JSON form that gst_rtsp_serve.py reads."""
        spec = asdict(self)
        spec["path"] = str(Path(self.path).resolve()) if self.path is not None else None
        return spec


class RtspSimulator:
    """Serve ``mounts`` over RTSP on 127.0.0.1 until ``stop()``; a context manager.

    ``pause()``/``resume()`` freeze and thaw the whole server (a camera that hangs without closing its
    connections) and ``kill()`` kills it hard (a camera that vanishes); ``start()`` again after ``stop()`` or
    ``kill()`` brings it back on the same port when that port was given or was bound before.
    """

    def __init__(self, mounts: list[Mount], port: int = 0, python: str = "/usr/bin/python3") -> None:
        names = [mount.name for mount in mounts]
        if not mounts or len(set(names)) != len(names):
            raise ValueError(f"need at least one mount and unique names, got {names}")
        self.mounts = {mount.name: mount for mount in mounts}
        self.python = python
        self._requested_port = port
        self._port: int | None = None
        self._process: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("RtspSimulator is not started")
        return self._port

    @property
    def pid(self) -> int | None:
        """The server's pid, which is also its process group id; None when not running."""
        return self._process.pid if self._process is not None else None

    def url(self, name: str, *, with_credentials: bool = True) -> str:
        mount = self.mounts[name]
        userinfo = ""
        if with_credentials and mount.username is not None and mount.password is not None:
            userinfo = f"{quote(mount.username, safe='')}:{quote(mount.password, safe='')}@"
        return f"rtsp://{userinfo}{HOST}:{self.port}/{quote(name)}"

    def start(self, timeout: float = 15) -> None:
        if self._process is not None:
            raise RuntimeError("RtspSimulator is already running")
        if not Path(self.python).is_file():
            raise RuntimeError(f"{self.python} not found: the simulator needs the system python with gi")
        port = self._port if self._port is not None else self._requested_port
        spec = json.dumps({"port": port, "mounts": [mount.spec() for mount in self.mounts.values()]})
        # A file, not a pipe: nobody drains stderr while the server runs, and a full pipe would block it.
        self._stderr = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
        self._process = subprocess.Popen(
            [self.python, str(SERVE_SCRIPT), "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            start_new_session=True,
        )
        assert self._process.stdin is not None
        self._process.stdin.write(spec)
        self._process.stdin.close()
        line = self._read_ready_line(timeout)
        if not line.startswith("READY "):
            reason = "did not start" if line else f"sent no READY line within {timeout} s"
            stderr = self._read_stderr()
            self.stop()
            raise RuntimeError(f"RTSP simulator {reason}; stdout {line!r}; stderr:\n{stderr}")
        self._port = int(line.split()[1])

    def _read_ready_line(self, timeout: float) -> str:
        """The first stdout line, or '' when the process closes stdout or the timeout passes."""
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        return lines[0].strip() if lines else ""

    def _read_stderr(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()[-8000:]

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL it after a grace period; safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        _signal_group(process.pid, signal.SIGCONT)  # a paused server cannot handle SIGTERM
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
        _kill_stragglers(process.pid)
        self._close_pipes(process)

    def kill(self) -> None:
        """SIGKILL the whole process group at once: the cameras vanish without closing connections."""
        process, self._process = self._process, None
        if process is None:
            return
        _signal_group(process.pid, signal.SIGKILL)
        process.wait()
        _kill_stragglers(process.pid)
        self._close_pipes(process)

    def pause(self) -> None:
        """SIGSTOP the process group: connections stay open but nothing is sent or answered."""
        _signal_group(self._running().pid, signal.SIGSTOP)

    def resume(self) -> None:
        _signal_group(self._running().pid, signal.SIGCONT)

    def _running(self) -> subprocess.Popen[str]:
        if self._process is None:
            raise RuntimeError("RtspSimulator is not running")
        return self._process

    def _close_pipes(self, process: subprocess.Popen[str]) -> None:
        if process.stdout is not None:
            process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid``, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state ppid pgrp ...
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _kill_stragglers(pgid: int, wait_s: float = 2.0) -> None:
    """SIGKILL whatever is left in the group (ffmpeg publishers) and wait until it is gone."""
    deadline = time.monotonic() + wait_s
    while group_members(pgid) and time.monotonic() < deadline:
        _signal_group(pgid, signal.SIGKILL)
        time.sleep(0.02)
