"""What the API's routes share: the state the process hands them (database, store, settings, bus)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Request

from alerts.bus import BusMessage
from gridwatch.camera_registry import CameraRegistry, settings_box
from gridwatch.feed import FeedHub
from gridwatch.live_frames import LiveFrames
from gridwatch.sealing import SecretBox, new_key
from gridwatch.settings import Settings
from storage.metadata import MetadataDB
from storage.objectstore import ObjectStore


class AppState:
    def __init__(
        self,
        db: MetadataDB,
        store: ObjectStore,
        presign_seconds: int,
        camera_health: Callable[[str], dict[str, Any] | None] | None = None,
        metrics: Callable[[], bytes] | None = None,
        settings: Settings | None = None,
        publish: Callable[[BusMessage], object] | None = None,
        feed: FeedHub | None = None,
        registry: CameraRegistry | None = None,
        live: LiveFrames | None = None,
    ) -> None:
        self.live = live  # pictures from the workers, for the registry made here
        self._registry = registry  # None: one over `db` with the settings' key (or a key of this process)
        self.feed = feed  # the live feed (SSE); None: this process has no Redis
        self.settings = settings  # the config: its rules and what a rule edit may refer to
        self.publish = publish  # incident status changes to the bus (the dispatcher notifies "resolved")
        self.metrics = metrics
        self.db = db
        self.store = store
        self.presign = timedelta(seconds=presign_seconds)
        self.camera_health = camera_health or (lambda _camera_id: None)

    @property
    def registry(self) -> CameraRegistry:
        if self._registry is None:
            s = self.settings
            if s is None:  # a bare app (tests): a key of this process only
                self._registry = CameraRegistry(self.db, SecretBox(new_key()))
            else:
                mounts = [m.name for m in s.simulator.cameras] if s.simulator else []
                self._registry = CameraRegistry(self.db, settings_box(s), sim_mounts=mounts, live=self.live)
        return self._registry


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.gridwatch
    return state


State = Annotated[AppState, Depends(_state)]
