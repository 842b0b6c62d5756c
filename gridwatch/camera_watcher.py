"""Keeps a worker's cameras in step with the registry: polls the database's camera fingerprint and, when an
admin added, changed or removed a camera, lets the runtime reconcile (start, restart, stop sources)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from storage.metadata import MetadataDB

log = logging.getLogger(__name__)


class CameraWatcher(threading.Thread):
    def __init__(
        self,
        db: MetadataDB,
        reconcile: Callable[[], None],
        every_s: float = 5.0,
        seen: tuple[int, datetime | None] | None = None,
    ) -> None:
        """`seen`: the fingerprint the cameras were started from (None: reconcile at the first look)."""
        super().__init__(name="camera-watcher", daemon=True)
        self.db, self.reconcile, self.every_s = db, reconcile, every_s
        self.stopping = threading.Event()
        self.reloads = 0
        self._seen = seen
        self._woken = threading.Event()
        self.on_change: Callable[[], None] | None = None  # the registry changed (called before reconciling)

    def wake(self) -> None:
        """Reconcile now (leases were won or lost), without waiting for the next poll."""
        self._woken.set()

    def check(self, *, woken: bool = False) -> bool:
        """Reconcile if the registry changed since the last look (or when woken); whether it did."""
        fingerprint = self.db.camera_fingerprint()
        if fingerprint == self._seen and not woken:
            return False
        if fingerprint != self._seen and self.on_change is not None:
            self.on_change()
        self._seen = fingerprint
        self.reconcile()
        self.reloads += 1
        return True

    def run(self) -> None:
        while not self.stopping.is_set():
            woken = self._woken.is_set()
            self._woken.clear()
            try:
                self.check(woken=woken)
            except Exception:
                log.exception("could not follow the camera registry; trying again in %.0f s", self.every_s)
            self._woken.wait(self.every_s)

    def stop(self) -> None:
        self.stopping.set()
        self._woken.set()
        if self.is_alive():
            self.join(10)
