"""What an orchestrator asks a detection worker (`gridwatch worker`): `/healthz` (the process answers),
`/readyz` (the database, Redis and the object store answer) and `/metrics` (Prometheus: its cameras' states
and frame rates, detector latency, queues, the cameras it holds and the cluster's unassigned ones).

A worker has no users and no API: these three routes are all it serves, without a login, on
`worker.metrics_host:metrics_port` (loopback by default; 0.0.0.0 in a pod, for the kubelet and Prometheus).
They show camera ids and numbers, never a URL or a secret.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gridwatch.api_health import Health, ReadyChecks
from gridwatch.cluster import LeaseKeeper


class LeaseCollector(Collector):
    """The worker's share of the cluster: cameras held and its capacity, live workers, cameras unassigned
    (no worker has room: the autoscaler's signal)."""

    def __init__(self, keeper: LeaseKeeper) -> None:
        self.keeper = keeper

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        k = self.keeper
        yield GaugeMetricFamily("gridwatch_cluster_cameras_held", "Cameras this worker holds", len(k.owned()))
        yield GaugeMetricFamily("gridwatch_cluster_capacity", "Most cameras this worker takes", k.capacity)
        assignment = k.assignment
        if assignment is not None:
            workers = len(assignment.loads())
            yield GaugeMetricFamily(
                "gridwatch_cluster_workers", "Workers with cameras at the last tick", workers
            )
            yield GaugeMetricFamily(
                "gridwatch_cluster_cameras_unassigned",
                "Enabled cameras no live worker has room for (the same on every worker)",
                len(assignment.unassigned),
            )
            yield GaugeMetricFamily(
                "gridwatch_cluster_demand_ratio",
                "This worker's share of the cameras (its own plus 1/N of the unassigned) over its capacity; "
                "summed over the workers: how many workers the cameras need",
                demand_ratio(
                    len(assignment.by_worker.get(k.worker_id, ())),
                    len(assignment.unassigned),
                    workers,
                    k.capacity,
                ),
            )


def demand_ratio(assigned: int, unassigned: int, workers: int, capacity: int) -> float:
    """(assigned + unassigned / workers) / capacity. The autoscaler sums it over the pods and divides by
    its target (0.9: 10 % headroom), which gives the workers the cameras need."""
    share = assigned + unassigned / max(1, workers)
    return share / max(1, capacity)


def ops_app(checks: Mapping[str, Callable[[], object]], metrics: Callable[[], bytes]) -> FastAPI:
    app = FastAPI(title="GridWatch worker", docs_url=None, redoc_url=None, openapi_url=None)
    ready = ReadyChecks(checks)

    @app.get("/healthz")
    def healthz() -> Health:
        return Health(status="ok")

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        readiness = await ready.run()
        code = 200 if readiness.status == "ready" else 503
        return JSONResponse(readiness.model_dump(exclude_none=True), status_code=code)

    @app.get("/metrics")
    def metrics_route() -> PlainTextResponse:
        return PlainTextResponse(metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


class OpsServer:
    """The ops app on its own thread; `port` is the bound one (0 in the settings picks a free port)."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(64)
        self.host, self.port = host, int(self._sock.getsockname()[1])
        config: Any = uvicorn.Config(app, log_level="warning", access_log=False, log_config=None)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="worker-ops", daemon=True
        )

    def start(self, timeout_s: float = 10.0) -> OpsServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._server.started:
            raise RuntimeError(f"the worker's ops server did not start on {self.host}:{self.port}")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
