"""Alerts get a thumbnail: the object key of the small JPEG shown in the feed.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # a nullable column without a default: ALTER TABLE ADD COLUMN in place on both dialects
    op.add_column("alerts", sa.Column("thumbnail_key", sa.String(1024), nullable=True))


def downgrade() -> None:
    # SQLite before 3.35 cannot drop a column in place: batch mode copies the table (rows kept)
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("thumbnail_key")
