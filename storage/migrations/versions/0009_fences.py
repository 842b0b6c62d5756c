"""Fencing tokens in the database: a worker that lost a camera's lease cannot write an alert for it.

- `camera_fences`: per camera, the highest lease token (and its worker) that has claimed the camera here.
  A worker claims its token when it starts the camera and with every alert it writes, in the alert's own
  transaction; a write with a lower token than the one recorded is refused (tokens only grow per camera).
- `alerts.worker_id`, `alerts.fence_token`: who wrote the alert, under which lease (NULL: `gridwatch run`,
  one process owns every camera; and alerts from before this revision).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "camera_fences",
        sa.Column("camera_id", sa.String(128), primary_key=True),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("worker_id", sa.String(128), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("worker_id", sa.String(128), nullable=True))
        batch.add_column(sa.Column("fence_token", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("fence_token")
        batch.drop_column("worker_id")
    op.drop_table("camera_fences")
