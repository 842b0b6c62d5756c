"""Fixtures for the alert pipeline tests, over the real servers of tests/conftest.py (Redis, SeaweedFS) and a
SQLite file: `bus` (a stream of its own), `pipeline_db`, `store`, `spool`, `clip_requests`, `make_pipeline`
(the pipeline wired to them, its spool started with its callbacks as the runtime does) and `settle`.

Named so as not to hide the fixtures of tests/conftest.py that other tests here use (`db` is parametrized
over SQLite and PostgreSQL for the dispatcher tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from alerts.bus import AlertBus
from alerts.pipeline import AlertPipeline, CameraPlace
from alerts.rules import Rule, RuleEngine
from gridwatch.services import RedisServer, S3Server
from ingest.source import ClipRequest
from storage.metadata import MetadataDB
from storage.objectstore import ObjectStore
from storage.spool import Spool


@pytest.fixture()
def bus(redis_server: RedisServer) -> Iterator[AlertBus]:
    stream = f"test:alerts:{time.monotonic_ns()}"
    bus = AlertBus.from_url(redis_server.url, stream=stream, maxlen=1000)
    yield bus
    bus.client.delete(stream)
    bus.close()


@pytest.fixture()
def pipeline_db(tmp_path: Path) -> Iterator[MetadataDB]:
    db = MetadataDB(f"sqlite:///{tmp_path / 'pipeline.db'}")
    db.create_schema()
    yield db
    db.close()


@pytest.fixture()
def store(s3_server: S3Server, s3_keys: tuple[str, str]) -> ObjectStore:
    """The session's SeaweedFS, one bucket for these tests (keys hold alert ids: tests do not collide)."""
    store = ObjectStore(s3_server.endpoint, *s3_keys, bucket="alerts-test")
    store.ensure_bucket()
    return store


@pytest.fixture()
def spool(store: ObjectStore, tmp_path: Path, pipeline_db: MetadataDB, bus: AlertBus) -> Iterator[Spool]:
    """Stopped before the database and the bus are closed (its callbacks write and publish)."""
    del pipeline_db, bus
    spool = Spool(store, tmp_path / "spool", 100 * 1024 * 1024, retry_initial_s=0.2)
    yield spool
    spool.stop(grace_s=1)


@pytest.fixture()
def clip_requests() -> list[tuple[str, ClipRequest]]:
    """What the pipeline asked the (absent) camera sources to record: (camera, request)."""
    return []


@pytest.fixture()
def make_pipeline(
    bus: AlertBus,
    pipeline_db: MetadataDB,
    store: ObjectStore,
    spool: Spool,
    clip_requests: list[tuple[str, ClipRequest]],
) -> Iterator[Callable[..., AlertPipeline]]:
    """`make_pipeline(start_spool=True, **overrides)`: an AlertPipeline with one rule (people, score 0.5)
    for camera cam1 (village v1, grid g1), pre-roll 2 s, post-roll 3 s; keyword arguments replace those of
    `AlertPipeline`. With `start_spool` the spool uploads at once, reporting to the pipeline's callbacks;
    else the test starts it (`spool.start(p.on_spool_stored, p.on_spool_evicted, p.on_spool_failed)`)."""
    made: list[AlertPipeline] = []

    def make(*, start_spool: bool = True, **overrides: Any) -> AlertPipeline:
        arguments: dict[str, Any] = {
            "rules": RuleEngine([Rule("people", frozenset({"person"}), 0.5, cooldown_s=60)]),
            "bus": bus,
            "db": pipeline_db,
            "store": store,
            "places": {"cam1": CameraPlace("v1", "g1")},
            "request_clip": lambda cam, req: clip_requests.append((cam, req)),
            "pre_roll_s": 2,
            "post_roll_s": 3,
            "spool": spool,
        }
        pipeline = AlertPipeline(**(arguments | overrides))
        made.append(pipeline)
        if start_spool:
            spool.start(pipeline.on_spool_stored, pipeline.on_spool_evicted, pipeline.on_spool_failed)
        return pipeline

    yield make
    for pipeline in made:
        pipeline.close()


@pytest.fixture()
def settle(spool: Spool) -> Callable[[AlertPipeline], None]:
    """`settle(pipeline)`: close the pipeline (its upload threads have handed everything to the spool), then
    wait until the spool has uploaded everything (at most 30 s)."""

    def settle(pipeline: AlertPipeline) -> None:
        pipeline.close()
        assert spool.flush(30), f"the spool did not upload everything: {spool.pending()}"

    return settle
