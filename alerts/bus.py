"""The alert bus: alerts as entries of a Redis stream (`gridwatch:alerts`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import redis

STREAM = "gridwatch:alerts"


@dataclass(frozen=True, slots=True)
class BusMessage:
    """What goes on the stream: flat string fields so any Redis client can read it."""

    alert_id: str
    kind: str  # "alert" (new), "clip" (its clip is stored) or "ended" (the object left or stopped being seen)
    camera_id: str
    village: str
    grid: str
    label: str
    score: float
    created_at: str  # ISO 8601 UTC
    snapshot_key: str | None = None
    clip_key: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    frame_time: str | None = None  # ISO 8601 UTC: when the frame that raised the alert was received
    ended_at: str | None = None  # kind "ended": when the object was last seen
    duration_s: float | None = None  # kind "ended": first to last sighting of the object
    best_score: float | None = None  # kind "ended": the best score over the object's whole event
    sequence: int | None = None  # kind "clip": 0 for the alert's first clip, 1, 2... for continuations

    def fields(self) -> dict[str, str]:
        out: dict[str, str] = {
            "alert_id": self.alert_id,
            "kind": self.kind,
            "camera_id": self.camera_id,
            "village": self.village,
            "grid": self.grid,
            "label": self.label,
            "score": f"{self.score:.4f}",
            "created_at": self.created_at,
        }
        if self.snapshot_key:
            out["snapshot_key"] = self.snapshot_key
        if self.clip_key:
            out["clip_key"] = self.clip_key
        if self.bbox is not None:
            out["bbox"] = json.dumps([round(v, 2) for v in self.bbox])
        for name in ("frame_time", "ended_at"):
            value = getattr(self, name)
            if value:
                out[name] = value
        if self.duration_s is not None:
            out["duration_s"] = f"{self.duration_s:.2f}"
        if self.best_score is not None:
            out["best_score"] = f"{self.best_score:.4f}"
        if self.sequence is not None:
            out["sequence"] = str(self.sequence)
        return out

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> BusMessage:
        f = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in fields.items()
        }
        bbox = tuple(json.loads(f["bbox"])) if "bbox" in f else None
        return cls(
            alert_id=f["alert_id"],
            kind=f["kind"],
            camera_id=f["camera_id"],
            village=f["village"],
            grid=f["grid"],
            label=f["label"],
            score=float(f["score"]),
            created_at=f["created_at"],
            snapshot_key=f.get("snapshot_key"),
            clip_key=f.get("clip_key"),
            bbox=bbox,  # type: ignore[arg-type]
            frame_time=f.get("frame_time"),
            ended_at=f.get("ended_at"),
            duration_s=float(f["duration_s"]) if "duration_s" in f else None,
            best_score=float(f["best_score"]) if "best_score" in f else None,
            sequence=int(f["sequence"]) if "sequence" in f else None,
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class AlertBus:
    def __init__(self, client: redis.Redis, stream: str = STREAM, maxlen: int = 100_000) -> None:
        self.client = client
        self.stream = stream
        self.maxlen = maxlen

    @classmethod
    def from_url(cls, url: str, stream: str = STREAM, maxlen: int = 100_000) -> AlertBus:
        client = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30
        )
        return cls(client, stream, maxlen)

    def publish(self, message: BusMessage) -> str:
        fields: dict[Any, Any] = message.fields()
        entry_id = self.client.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def read_all(self, count: int = 1000) -> list[tuple[str, BusMessage]]:
        entries = cast(list[tuple[Any, dict[Any, Any]]], self.client.xrange(self.stream, count=count))
        return [(_text(eid), BusMessage.from_fields(fields)) for eid, fields in entries]

    def close(self) -> None:
        self.client.close()
