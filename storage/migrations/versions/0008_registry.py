"""The registry: cameras, villages, grids, teams and users made through the API beside the config's.

- `cameras`: the detect and record URLs sealed by the deployment's secret key (`url_sealed`,
  `record_url_sealed`; never clear text), the record URL redacted for display, `source` ("config": from
  the YAML, rewritten at every start; "api": registered by an admin), the last probe's result (JSON) and
  when it ran, and when the camera was registered.
- `villages`, `grids`, `teams`, `users`: `source`, as for cameras.
- `teams`: `roster`, the shifts of an API-made team as JSON ([{user, schedule}]).

Rows that exist keep working: their `source` is "config" (all came from the YAML before this revision).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)
ORGANISATION = ("villages", "grids", "teams", "users")


def _source() -> sa.Column[str]:
    return sa.Column("source", sa.String(16), nullable=False, server_default="config")


def upgrade() -> None:
    with op.batch_alter_table("cameras") as batch:
        batch.add_column(sa.Column("url_sealed", sa.Text(), nullable=True))
        batch.add_column(sa.Column("record_url_redacted", sa.String(2048), nullable=True))
        batch.add_column(sa.Column("record_url_sealed", sa.Text(), nullable=True))
        batch.add_column(_source())
        batch.add_column(sa.Column("probe", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("probed_at", UTC_TIME, nullable=True))
        batch.add_column(sa.Column("created_at", UTC_TIME, nullable=True))
    op.create_index("ix_cameras_source", "cameras", ["source"])
    for table in ORGANISATION:
        with op.batch_alter_table(table) as batch:
            batch.add_column(_source())
    with op.batch_alter_table("teams") as batch:
        batch.add_column(sa.Column("roster", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Back to 0007: cameras registered through the API lose their sealed URLs and probes (a 0007 worker
    reads cameras from the config only), organisation rows stay, without their source."""
    with op.batch_alter_table("teams") as batch:
        batch.drop_column("roster")
    for table in reversed(ORGANISATION):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("source")
    op.drop_index("ix_cameras_source", table_name="cameras")
    with op.batch_alter_table("cameras") as batch:
        for column in (
            "created_at",
            "probed_at",
            "probe",
            "source",
            "record_url_sealed",
            "record_url_redacted",
            "url_sealed",
        ):
            batch.drop_column(column)
