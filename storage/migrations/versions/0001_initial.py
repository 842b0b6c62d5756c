"""Cameras and alerts, as `create_all` made them before migrations.

Exactly that schema, so a database of before migrations is adopted by stamping this revision.

Revision ID: 0001
Revises:
Create Date: 2024-05-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "cameras",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("village", sa.String(128), nullable=False),
        sa.Column("grid", sa.String(128), nullable=False),
        sa.Column("url_redacted", sa.String(2048), nullable=False),
        sa.Column("detect_fps", sa.Float(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
    )
    op.create_index("ix_cameras_village", "cameras", ["village"])
    op.create_index("ix_cameras_grid", "cameras", ["grid"])

    op.create_table(
        "alerts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("camera_id", sa.String(128), nullable=False),
        sa.Column("village", sa.String(128), nullable=False),
        sa.Column("grid", sa.String(128), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("bbox", sa.JSON(), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("frame_time", UTC_TIME, nullable=False),
        sa.Column("snapshot_key", sa.String(1024), nullable=True),
        sa.Column("clip_key", sa.String(1024), nullable=True),
        sa.Column("clip_status", sa.String(16), nullable=False),
        sa.Column("clip_duration_s", sa.Float(), nullable=True),
        sa.Column("clip_error", sa.Text(), nullable=True),
        sa.Column("stream_time_s", sa.Float(), nullable=True),
        sa.CheckConstraint("clip_status IN ('pending', 'stored', 'failed')", name="ck_alerts_clip_status"),
    )
    op.create_index("ix_alerts_camera_id", "alerts", ["camera_id"])
    op.create_index("ix_alerts_created_at_id", "alerts", ["created_at", "id"])
    op.create_index("ix_alerts_grid_created_at", "alerts", ["grid", "created_at"])


def downgrade() -> None:
    op.drop_table("alerts")
    op.drop_table("cameras")
