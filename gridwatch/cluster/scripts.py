"""Lua scripts run by EVALSHA, loaded on first use and again after the server forgets them (a restart,
SCRIPT FLUSH). A NOSCRIPT error means nothing ran, so the retry is safe."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis


class LuaScript:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, client: redis.Redis, keys: Sequence[str], args: Sequence[Any] = ()) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
