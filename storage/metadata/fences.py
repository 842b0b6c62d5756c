"""Fencing tokens: the database refuses writes for a camera from a worker that lost the camera's lease.

Workers hold cameras by leases in Redis; each new lease of a camera gets a larger token (`gridwatch.cluster`).
A worker can lose a lease without knowing it yet (a long pause, a cut network), and another worker takes the
camera. Checking the lease in Redis before writing leaves a gap between the check and the write, so the
database keeps its own fence: `camera_fences` holds, per camera, the highest token that claimed it. A claim
with a higher token, or the same token by the same worker, moves the fence up (one conditional upsert: no
read-then-write race, on SQLite and PostgreSQL alike); anything else is refused with `StaleFence`, and
nothing is written. The same token from another worker means Redis handed it out twice (it lost its latest
writes): neither may take the other's place.

A worker claims its token when it starts a camera (so an old owner is shut out from that moment, even before
the new owner's first alert) and again inside each alert's own transaction (`MetadataDB.add_alert(...,
fence=...)`): the alert and the check commit together or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, and_, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from storage.metadata.records import utcnow
from storage.metadata.tables import CameraFenceRow


@dataclass(frozen=True, slots=True)
class Fence:
    """A worker's lease on a camera: who, and the lease's fencing token."""

    camera_id: str
    worker_id: str
    token: int


@dataclass(frozen=True, slots=True)
class FenceRecord:
    camera_id: str
    token: int
    worker_id: str
    claimed_at: datetime


class StaleFence(RuntimeError):
    """A write under a token lower than one that already claimed the camera: the writer lost the camera."""

    def __init__(self, fence: Fence, current: FenceRecord | None) -> None:
        self.fence = fence
        self.current = current
        now = f"token {current.token} of worker {current.worker_id}" if current else "unknown"
        super().__init__(
            f"camera {fence.camera_id}: write by worker {fence.worker_id} under lease token {fence.token} "
            f"refused: the camera has been claimed since by {now}"
        )


def claim_in(session: Session, dialect: str, fence: Fence) -> None:
    """Move the camera's fence up to `fence.token` inside `session`'s transaction, or raise `StaleFence`
    (the transaction is then left to the caller to roll back)."""
    if fence.token < 0:
        raise ValueError(f"a fencing token is >= 0, not {fence.token}")
    values = {
        "camera_id": fence.camera_id,
        "token": fence.token,
        "worker_id": fence.worker_id,
        "claimed_at": utcnow(),
    }
    ins = sqlite.insert(CameraFenceRow) if dialect == "sqlite" else postgresql.insert(CameraFenceRow)
    statement = ins.values(**values).on_conflict_do_update(
        index_elements=["camera_id"],
        set_={c: ins.excluded[c] for c in ("token", "worker_id", "claimed_at")},
        where=or_(
            CameraFenceRow.token < ins.excluded.token,
            and_(
                CameraFenceRow.token == ins.excluded.token,
                CameraFenceRow.worker_id == ins.excluded.worker_id,
            ),
        ),
    )
    moved = session.execute(statement.returning(CameraFenceRow.token)).first()
    if moved is None:  # the row exists with a higher token (or another worker's same one)
        row = session.get(CameraFenceRow, fence.camera_id, populate_existing=True)
        raise StaleFence(fence, _record(row) if row is not None else None)


def _record(row: CameraFenceRow) -> FenceRecord:
    return FenceRecord(row.camera_id, row.token, row.worker_id, row.claimed_at)


class FenceStore:
    """Mixed into `MetadataDB` (which provides the session factory)."""

    _sessions: sessionmaker[Session]
    _engine: Engine

    def claim_fence(self, fence: Fence) -> None:
        """Record that `fence.worker_id` holds the camera under `fence.token`; `StaleFence` if a higher
        token has claimed it (the caller lost the camera)."""
        with self._sessions.begin() as session:
            claim_in(session, self._engine.dialect.name, fence)

    def camera_fence(self, camera_id: str) -> FenceRecord | None:
        """The highest token that has claimed the camera, None if none has."""
        with self._sessions() as session:
            row = session.scalars(select(CameraFenceRow).where(CameraFenceRow.camera_id == camera_id)).first()
            return _record(row) if row is not None else None
