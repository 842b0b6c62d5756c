"""Alerts record the sizes of their stored snapshot and thumbnail, and whether one is waiting in a spool.

`snapshot_bytes` / `thumbnail_bytes`: the size of the stored object (the final one, once a best frame
replaced the snapshot under the same key); NULL for images stored before this revision, which retention
counts at an estimate. `snapshot_pending_since` / `thumbnail_pending_since`: set when the image goes into a
spool, cleared when its upload is confirmed or given up; retention keeps the alert meanwhile, so no object
lands in the store after its row is gone.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)
COLUMNS = ("snapshot_bytes", "thumbnail_bytes", "snapshot_pending_since", "thumbnail_pending_since")


def upgrade() -> None:
    # nullable columns without a default: ALTER TABLE ADD COLUMN in place on both dialects (rows kept)
    op.add_column("alerts", sa.Column("snapshot_bytes", sa.BigInteger(), nullable=True))
    op.add_column("alerts", sa.Column("thumbnail_bytes", sa.BigInteger(), nullable=True))
    op.add_column("alerts", sa.Column("snapshot_pending_since", UTC_TIME, nullable=True))
    op.add_column("alerts", sa.Column("thumbnail_pending_since", UTC_TIME, nullable=True))


def downgrade() -> None:
    # SQLite before 3.35 cannot drop a column in place: batch mode copies the table (rows kept)
    with op.batch_alter_table("alerts") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
