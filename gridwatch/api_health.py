"""Health routes: `/healthz` (the process answers) and `/readyz` (it can serve: the database, Redis when the
process has a live feed, and the object store all answer).

Both are open to anyone (load balancers, orchestrators), so `/readyz` tells only each check's name, ok or
failed, and the class of the error ("ConnectionError", "timeout"); the details go to the log, once per
change. Each check runs in its own thread and is given `timeout_s`: a store or a Redis that hangs makes the
answer "timeout", never a hanging probe. A check still running from an earlier probe is not started again
(at most one thread per check), and results are reused for `fresh_s`, so a flood of probes costs the
database, Redis and the store at most one call each per second.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from gridwatch.api_state import AppState, State
from storage.objectstore import StorageError

log = logging.getLogger(__name__)
router = APIRouter()

# never written: looking it up proves the database answers (a primary-key SELECT; `schema_revision` would
# log two alembic lines a probe), and a HEAD on it that the store answers, knows the bucket and our key
READY_PROBE_ID = "gridwatch-readyz-probe"


class Health(BaseModel):
    status: str


class CheckResult(BaseModel):
    status: Literal["ok", "failed"]
    error: str | None = None  # the error's class, or "timeout"


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    checks: dict[str, CheckResult]


class ReadyChecks:
    """Named checks (callables that raise when their dependency does not answer), run concurrently."""

    def __init__(
        self,
        checks: Mapping[str, Callable[[], object]],
        *,
        timeout_s: float = 1.0,
        fresh_s: float = 1.0,
    ) -> None:
        self.checks = dict(checks)
        self.timeout_s = timeout_s
        self.fresh_s = fresh_s
        self._running: dict[str, Future[None]] = {}
        self._results: dict[str, tuple[float, CheckResult]] = {}

    async def run(self) -> Readiness:
        names = list(self.checks)
        results = await asyncio.gather(*(self._check(name) for name in names))
        ready = all(r.status == "ok" for r in results)
        return Readiness(
            status="ready" if ready else "not ready", checks=dict(zip(names, results, strict=True))
        )

    async def _check(self, name: str) -> CheckResult:
        cached = self._results.get(name)
        if cached is not None and time.monotonic() - cached[0] < self.fresh_s:
            return cached[1]
        future = self._running.get(name)
        if future is None or future.done():
            future = self._running[name] = self._start(name)
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), self.timeout_s)
            result = CheckResult(status="ok")
        except TimeoutError:
            result = CheckResult(status="failed", error="timeout")
            self._log_change(name, result, f"no answer within {self.timeout_s:g} s")
        except Exception as exc:
            result = CheckResult(status="failed", error=_error_class(exc))
            self._log_change(name, result, f"{type(exc).__name__}: {exc}")
        else:
            self._log_change(name, result, "")
        self._results[name] = (time.monotonic(), result)
        return result

    def _start(self, name: str) -> Future[None]:
        future: Future[None] = Future()
        check = self.checks[name]

        def work() -> None:
            future.set_running_or_notify_cancel()
            try:
                check()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(None)

        threading.Thread(target=work, name=f"readyz-{name}", daemon=True).start()
        return future

    def _log_change(self, name: str, result: CheckResult, detail: str) -> None:
        previous = self._results.get(name)
        if previous is not None and previous[1].status == result.status:
            return
        if result.status == "ok":
            if previous is not None:
                log.info("readiness: %s answers again", name)
        else:
            log.warning("readiness: %s check failed: %s", name, detail)


def _error_class(exc: BaseException) -> str:
    """What went wrong, in a word: the error's class; for the store's, the S3 code ("NoSuchBucket",
    "SignatureDoesNotMatch") or the class of the error under it ("MaxRetryError": unreachable)."""
    if isinstance(exc, StorageError):
        return exc.code or type(exc.__cause__ or exc).__name__
    return type(exc).__name__


def checks_of(state: AppState) -> ReadyChecks:
    """The checks for what this process uses: the database, the object store, and Redis if it has a feed."""
    checks: dict[str, Callable[[], object]] = {"database": lambda: state.db.get_alert(READY_PROBE_ID)}
    if state.feed is not None:
        checks["redis"] = state.feed.client.ping
    checks["object_store"] = lambda: state.store.exists(READY_PROBE_ID)
    return ReadyChecks(checks)


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency does not answer"}},
)
async def readyz(request: Request, s: State) -> JSONResponse:
    """200 when every dependency answers, 503 naming the ones that do not; never takes more than ~2 s."""
    checks: ReadyChecks | None = getattr(request.app.state, "ready_checks", None)
    if checks is None:
        checks = request.app.state.ready_checks = checks_of(s)
    readiness = await checks.run()
    return JSONResponse(
        readiness.model_dump(exclude_none=True), status_code=200 if readiness.status == "ready" else 503
    )
