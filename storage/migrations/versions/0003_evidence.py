"""Events, clip files, alert actions, deliveries and the audit log; alerts point at their event.

Revision ID: 0003
Revises: 0002
Create Date: 2024-06-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)


def _alert_fk(table: str) -> sa.Column[str]:
    fk = sa.ForeignKey("alerts.id", name=f"fk_{table}_alert_id_alerts")
    return sa.Column("alert_id", sa.String(32), fk, nullable=False)


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("camera_id", sa.String(128), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("track_id", sa.Integer(), nullable=False),
        sa.Column("started_at", UTC_TIME, nullable=False),
        sa.Column("ended_at", UTC_TIME, nullable=True),
        sa.Column("best_score", sa.Float(), nullable=False),
    )
    op.create_index("ix_events_camera_id_started_at", "events", ["camera_id", "started_at"])

    # SQLite cannot add a foreign key in place: batch mode copies the table (rows kept)
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("event_id", sa.String(32), nullable=True))
        batch.create_foreign_key("fk_alerts_event_id_events", "events", ["event_id"], ["id"])
        batch.create_index("ix_alerts_event_id", ["event_id"])
        batch.create_index("ix_alerts_label_created_at", ["label", "created_at"])

    op.create_table(
        "clips",
        sa.Column("id", sa.String(32), primary_key=True),
        _alert_fk("clips"),
        sa.Column("object_key", sa.String(1024), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", UTC_TIME, nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("codec", sa.String(32), nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("stored_at", UTC_TIME, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'spooled', 'stored', 'failed', 'evicted')", name="ck_clips_status"
        ),
        sa.CheckConstraint("sequence >= 0", name="ck_clips_sequence"),
        sa.UniqueConstraint("alert_id", "sequence", name="uq_clips_alert_id_sequence"),
        sa.UniqueConstraint("object_key", name="uq_clips_object_key"),
    )
    op.create_index("ix_clips_status", "clips", ["status"])

    op.create_table(
        "alert_actions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _alert_fk("alert_actions"),
        sa.Column(
            "user_id",
            sa.String(128),
            sa.ForeignKey("users.id", name="fk_alert_actions_user_id_users"),
            nullable=True,
        ),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.CheckConstraint(
            "action IN ('acknowledged', 'dispatched', 'resolved', 'false_alarm', 'escalated', 'comment')",
            name="ck_alert_actions_action",
        ),
    )
    op.create_index("ix_alert_actions_alert_id", "alert_actions", ["alert_id"])

    op.create_table(
        "deliveries",
        _alert_fk("deliveries"),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("alert_id", "channel", "target"),
        sa.CheckConstraint("status IN ('sent', 'retrying', 'failed')", name="ck_deliveries_status"),
    )

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
    )
    op.create_index("ix_audit_log_target", "audit_log", ["target"])
    op.create_index("ix_audit_log_at", "audit_log", ["at"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("deliveries")
    op.drop_table("alert_actions")
    op.drop_table("clips")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_index("ix_alerts_label_created_at")
        batch.drop_index("ix_alerts_event_id")
        batch.drop_constraint("fk_alerts_event_id_events", type_="foreignkey")
        batch.drop_column("event_id")
    op.drop_table("events")
