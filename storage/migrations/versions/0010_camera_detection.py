"""A camera's detection settings in the database: zones, masks, motion masks and per-label thresholds
(`cameras.detection`, JSON; NULL: none). The config's cameras get theirs from the YAML at every start, as
their other fields; cameras registered through the API get theirs from the admin.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cameras") as batch:
        batch.add_column(sa.Column("detection", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Back to 0009: API cameras lose their zones, masks and thresholds (a 0009 worker does not read them)."""
    with op.batch_alter_table("cameras") as batch:
        batch.drop_column("detection")
