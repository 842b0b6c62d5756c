"""Shared fixtures: real servers (Redis, SeaweedFS S3, GStreamer RTSP) on free loopback ports, models, media.

Nothing here skips: a missing server, tool, model or clip is a test failure (`make test` installs them).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gridwatch.services import RedisServer, S3Server

REPO = Path(__file__).resolve().parents[1]
S3_ACCESS = "gw-test-access"
S3_SECRET = "gw-test-secret-Zq81x"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return Path(os.environ.get("GRIDWATCH_MODELS_DIR", REPO / ".cache" / "models"))


@pytest.fixture(scope="session")
def media_dir() -> Path:
    return Path(os.environ.get("GRIDWATCH_MEDIA_DIR", REPO / ".cache" / "media"))


@pytest.fixture(scope="session")
def media(media_dir: Path) -> dict[str, Path]:
    from ingest.simulator.media import prepare_media

    return prepare_media(media_dir, progress=lambda _line: None)


@pytest.fixture(scope="session")
def s3_keys() -> tuple[str, str]:
    return S3_ACCESS, S3_SECRET


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), binary="redis-server")
    with server:
        yield server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3"), S3_ACCESS, S3_SECRET)
    server.start(timeout=60)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """Make a real, tiny file system (a tmpfs of `size` bytes) for disk-full tests: writes get ENOSPC.

    Mounting needs root (the test machines run the tests as root); elsewhere the test fails and says so.
    """
    mounts: list[Path] = []

    def make(size: int) -> Path:
        where = tmp_path / f"small-disk-{len(mounts)}"
        where.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"cannot mount a {size}-byte tmpfs for a disk-full test (needs root): {done.stderr}")
        mounts.append(where)
        return where

    yield make
    for where in reversed(mounts):
        subprocess.run(["umount", "--lazy", str(where)], check=False)
