"""A real `gridwatch worker` measures its capacity: it times its models at start and takes no more cameras
than the capacity it measured, which it publishes with its heartbeats (and as a metric). With a target load
far below what one camera costs, the measured capacity is 1 on any machine: the worker holds exactly one of
the cameras, the others stay unassigned, whatever `worker.capacity` allows."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from gridwatch.cluster import parse_lease_value
from gridwatch.live_frames import RedisFrames
from gridwatch.sealing import new_key
from gridwatch.services import RedisServer, S3Server
from ingest.ports import free_port
from ingest.simulator.server import Mount, RtspSimulator

REPO = Path(__file__).resolve().parents[1]
CAMERAS = 5

pytestmark = pytest.mark.e2e


def test_a_worker_takes_no_more_cameras_than_it_measured(
    tmp_path: Path,
    media: dict[str, Path],
    redis_server: RedisServer,
    s3_server: S3Server,
    s3_keys: tuple[str, str],
    models_dir: Path,
    until: Callable[..., Any],
) -> None:
    simulator = RtspSimulator([Mount(name="empty", kind="file", path=media["empty"], loop=True)])
    simulator.start()
    ops_port = free_port()
    config = {
        "redis": {"url": redis_server.url},
        "s3": {"endpoint": s3_server.endpoint, "access_key": s3_keys[0], "secret_key": s3_keys[1],
               "bucket": "capacity"},
        "database": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "secret_key": new_key(),
        "models": {"dir": str(models_dir), "inference_workers": 1},
        "worker": {"id": "measured-1", "capacity": 50, "capacity_mode": "measured", "target_load": 0.001,
                   "metrics_port": ops_port, "lease_ttl_s": 3},
        "villages": [{"id": "v1", "name": "V1"}],
        "grids": [{"id": "g1", "name": "G1", "village": "v1"}],
        "cameras": [{"id": f"cap-{i}", "name": f"Cap {i}", "village": "v1", "grid": "g1",
                     "url": simulator.url("empty"), "detect_fps": 2} for i in range(CAMERAS)],
    }  # fmt: skip
    path = tmp_path / "worker.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")}
    env |= {"PYTHONUNBUFFERED": "1", "GRIDWATCH_DATA_DIR": str(tmp_path / "data")}
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gridwatch.cli", "worker", str(path)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    client = redis.Redis.from_url(redis_server.url)

    def leases() -> dict[str, str]:
        out = {}
        for i in range(CAMERAS):
            lease = parse_lease_value(client.get(f"gridwatch:lease:cap-{i}"))
            if lease is not None:
                out[f"cap-{i}"] = lease[0]
        return out

    try:
        published = lambda: client.hget("gridwatch:workers:capacity", "measured-1")  # noqa: E731
        until("the worker publishes its capacity", lambda: published() is not None, timeout=90)
        assert published() in (b"-1", b"1")  # from its first heartbeat on (negated while it settles)
        until("the worker settles", lambda: published() == b"1", timeout=30)
        until("the worker holds a camera", lambda: len(leases()) >= 1, timeout=30)
        output = log_path.read_text(errors="replace")
        measured = re.search(r"the models take ([\d.]+) ms per frame here: capacity (\d+) cameras", output)
        assert measured is not None, output[-3000:]
        assert float(measured.group(1)) > 0 and measured.group(2) == "1"
        assert client.hget("gridwatch:workers:capacity", "measured-1") == b"1"
        metrics = httpx.get(f"http://127.0.0.1:{ops_port}/metrics", timeout=5).text
        assert re.search(r"^gridwatch_cluster_capacity 1\.0$", metrics, re.M), metrics[:2000]
        # the autoscaler's signals, as docker/k8s/monitoring/prometheus-adapter-values.yaml reads them:
        # demand (1 camera held + 4 with no room, 1 worker) / capacity 1 = 5 workers needed
        scraped = lambda: httpx.get(f"http://127.0.0.1:{ops_port}/metrics", timeout=5).text  # noqa: E731
        until(
            "the worker exports the demand ratio and a latency p95",
            lambda: (
                re.search(r"^gridwatch_cluster_demand_ratio 5\.0$", text := scraped(), re.M)
                and re.search(
                    r'^gridwatch_detector_latency_quantile_seconds\{quantile="0\.95"\} [\d.e+-]+$', text, re.M
                )
            ),
            timeout=30,
        )
        for _ in range(3):  # ticks go by: still one camera, the others have no worker with room
            time.sleep(1)
            assert list(leases().values()) == ["measured-1"], leases()
        assert "cameras have no worker with room" in log_path.read_text(errors="replace")
        # the API asks the worker for the picture of the camera it pulls: no second RTSP session
        frames = RedisFrames(client)
        (held,) = leases()
        grabbed = until("the worker gives its camera's picture", lambda: frames.grab(held), timeout=20)
        assert grabbed.ok and grabbed.source == "worker" and (grabbed.width, grabbed.height) == (768, 576)
        assert grabbed.jpeg is not None and grabbed.jpeg.startswith(b"\xff\xd8")
        unheld = next(f"cap-{i}" for i in range(CAMERAS) if f"cap-{i}" != held)
        assert frames.grab(unheld) is None  # nobody runs it: the API would open a session of its own
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        simulator.stop()
    assert proc.returncode == 0, log_path.read_text(errors="replace")[-3000:]
