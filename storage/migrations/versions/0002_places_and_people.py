"""Villages, grids, teams and users: who owns which camera's alerts.

Revision ID: 0002
Revises: 0001
Create Date: 2024-06-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "villages",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
    )
    op.create_table(
        "teams",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
    )
    op.create_table(
        "grids",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column(
            "village_id",
            sa.String(128),
            sa.ForeignKey("villages.id", name="fk_grids_village_id_villages"),
            nullable=False,
        ),
        sa.Column(
            "team_id", sa.String(128), sa.ForeignKey("teams.id", name="fk_grids_team_id_teams"), nullable=True
        ),
    )
    op.create_index("ix_grids_village_id", "grids", ["village_id"])
    op.create_index("ix_grids_team_id", "grids", ["team_id"])
    op.create_table(
        "users",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column(
            "team_id", sa.String(128), sa.ForeignKey("teams.id", name="fk_users_team_id_teams"), nullable=True
        ),
        sa.Column("password_hash", sa.String(512), nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.CheckConstraint("role IN ('operator', 'patrol', 'admin')", name="ck_users_role"),
    )
    op.create_index("ix_users_team_id", "users", ["team_id"])


def downgrade() -> None:
    op.drop_table("users")
    op.drop_table("grids")
    op.drop_table("teams")
    op.drop_table("villages")
