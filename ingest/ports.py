"""Free loopback ports for the servers GridWatch and its tests start (RTSP simulator, embedded Redis and S3,
test receivers).

A port the kernel hands out for `bind(0)` is free only until someone else binds it: between the moment it is
picked and the moment the server binds it, another process on the machine (a second test worker, another
GridWatch) may be handed the same number. So every port handed out here is also claimed for
`CLAIM_S` seconds in a directory shared by the processes of the machine (a file created with O_EXCL per
port); a port claimed by another process within that time is skipped.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"
CLAIM_S = 120.0
CLAIMS = Path(tempfile.gettempdir()) / "gridwatch-ports"


def can_bind(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _claim(port: int) -> bool:
    """Claim `port` for this process unless another claimed it less than CLAIM_S ago."""
    CLAIMS.mkdir(mode=0o1777, exist_ok=True)
    path = CLAIMS / str(port)
    with contextlib.suppress(FileNotFoundError):
        if time.time() - path.stat().st_mtime < CLAIM_S and path.read_text().strip() != str(os.getpid()):
            return False
        path.unlink()  # an old claim: it is ours to take
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False  # another process claimed it just now
    with os.fdopen(fd, "w") as out:
        out.write(str(os.getpid()))
    return True


def free_port(also_plus: int | None = None) -> int:
    """A TCP port free on 127.0.0.1 and claimed for this process; with `also_plus`, port + also_plus is free
    and claimed too."""
    for _ in range(500):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port: int = sock.getsockname()[1]
        wanted = [port] if also_plus is None else [port, port + also_plus]
        if wanted[-1] > 65535 or not all(can_bind(p) for p in wanted[1:]):
            continue
        if all(_claim(p) for p in wanted):
            return port
    raise RuntimeError(
        f"no free port P on {LOOPBACK}" + (f" with P+{also_plus} also free" if also_plus else "")
    )
