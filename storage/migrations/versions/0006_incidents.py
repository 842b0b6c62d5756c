"""Incidents and what the dispatcher keeps: alerts join incidents, deliveries are keyed per notification,
push subscriptions, rules edited through the API.

- `incidents`: alerts of the same kind in one grid within a window; the lifecycle status with the time of
  each step (who took it is in `alert_actions`), escalation.
- `alerts`: `severity`, `rule`, `incident_id`.
- `alert_actions`: `incident_id`; the action `on_scene`.
- `deliveries`: keyed by `key` (notification, notifier, target), so that a redelivered bus entry sends
  nothing twice; with the incident and the kind of notification. Rows of the old shape are kept, keyed
  `alert:channel:target`.
- `push_subscriptions`: a browser's Web Push subscription, per user.
- `rule_overrides`: rules created or changed through the API (they win over the YAML rule of the same name).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)
SEVERITIES = ("low", "normal", "high", "critical")
STATUSES = ("new", "acknowledged", "dispatched", "on_scene", "resolved", "false_alarm")
OLD_ACTIONS = ("acknowledged", "dispatched", "resolved", "false_alarm", "escalated", "comment")
ACTIONS = ("acknowledged", "dispatched", "on_scene", "resolved", "false_alarm", "escalated", "comment")
DELIVERY_STATUSES = ("sent", "retrying", "failed", "gone")
OLD_DELIVERY_STATUSES = ("sent", "retrying", "failed")


def _alert_fk(table: str) -> sa.Column[str]:
    # named as the models name it; the table is renamed into place, the constraint keeps its name
    fk = sa.ForeignKey("alerts.id", name=f"fk_{table}_alert_id_alerts")
    return sa.Column("alert_id", sa.String(32), fk, nullable=False)


def _in(column: str, choices: tuple[str, ...]) -> str:
    return "{} IN ({})".format(column, ", ".join(f"'{c}'" for c in choices))


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("village", sa.String(128), nullable=False),
        sa.Column("grid", sa.String(128), nullable=False),
        sa.Column("team", sa.String(128), nullable=True),
        sa.Column("opened_at", UTC_TIME, nullable=False),
        sa.Column("last_alert_at", UTC_TIME, nullable=False),
        sa.Column("alert_count", sa.Integer(), nullable=False),
        sa.Column("cameras", sa.JSON(), nullable=False),
        sa.Column("first_alert_id", sa.String(32), nullable=False),
        sa.Column("escalation_level", sa.Integer(), nullable=False),
        sa.Column("escalated_at", UTC_TIME, nullable=True),
        sa.Column("acknowledged_at", UTC_TIME, nullable=True),
        sa.Column("dispatched_at", UTC_TIME, nullable=True),
        sa.Column("on_scene_at", UTC_TIME, nullable=True),
        sa.Column("closed_at", UTC_TIME, nullable=True),
        sa.CheckConstraint(_in("severity", SEVERITIES), name="ck_incidents_severity"),
        sa.CheckConstraint(_in("status", STATUSES), name="ck_incidents_status"),
    )
    op.create_index("ix_incidents_grid_category_status", "incidents", ["grid", "category", "status"])
    op.create_index("ix_incidents_status_opened_at", "incidents", ["status", "opened_at"])
    op.create_index("ix_incidents_opened_at", "incidents", ["opened_at"])

    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("severity", sa.String(16), nullable=True))
        batch.add_column(sa.Column("rule", sa.String(128), nullable=True))
        batch.add_column(sa.Column("incident_id", sa.String(32), nullable=True))
        batch.create_foreign_key("fk_alerts_incident_id_incidents", "incidents", ["incident_id"], ["id"])
        batch.create_index("ix_alerts_incident_id", ["incident_id"])

    with op.batch_alter_table("alert_actions") as batch:
        batch.add_column(sa.Column("incident_id", sa.String(32), nullable=True))
        batch.create_index("ix_alert_actions_incident_id", ["incident_id"])
        batch.drop_constraint("ck_alert_actions_action", type_="check")
        batch.create_check_constraint("ck_alert_actions_action", _in("action", ACTIONS))

    op.create_table(
        "deliveries_v6",
        sa.Column("key", sa.String(400), primary_key=True),
        _alert_fk("deliveries"),
        sa.Column("incident_id", sa.String(32), nullable=True),
        sa.Column("kind", sa.String(16), nullable=True),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.CheckConstraint(_in("status", DELIVERY_STATUSES), name="ck_deliveries_status"),
    )
    op.execute(
        "INSERT INTO deliveries_v6 (key, alert_id, channel, target, status, attempts, last_error, at) "
        "SELECT alert_id || ':' || channel || ':' || target, alert_id, channel, target, status, attempts, "
        "last_error, at FROM deliveries"
    )
    op.drop_table("deliveries")
    op.rename_table("deliveries_v6", "deliveries")
    op.create_index("ix_deliveries_alert_id", "deliveries", ["alert_id"])
    op.create_index("ix_deliveries_incident_id", "deliveries", ["incident_id"])

    op.create_table(
        "push_subscriptions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("endpoint", sa.String(2048), nullable=False),
        sa.Column("subscription", sa.Text(), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.UniqueConstraint("endpoint", name="uq_push_subscriptions_endpoint"),
    )
    op.create_index("ix_push_subscriptions_user_id", "push_subscriptions", ["user_id"])

    op.create_table(
        "rule_overrides",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rule_overrides")
    op.drop_index("ix_push_subscriptions_user_id", "push_subscriptions")
    op.drop_table("push_subscriptions")
    op.drop_index("ix_deliveries_incident_id", "deliveries")
    op.drop_index("ix_deliveries_alert_id", "deliveries")
    op.create_table(
        "deliveries_v5",
        _alert_fk("deliveries"),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("alert_id", "channel", "target"),
        sa.CheckConstraint(_in("status", OLD_DELIVERY_STATUSES), name="ck_deliveries_status"),
    )
    # per (alert, channel, target) the latest row; 'gone' has no old equivalent
    op.execute(
        "INSERT INTO deliveries_v5 (alert_id, channel, target, status, attempts, last_error, at) "
        "SELECT alert_id, channel, target, MAX(CASE status WHEN 'gone' THEN 'failed' ELSE status END), "
        "MAX(attempts), MAX(last_error), MAX(at) FROM deliveries GROUP BY alert_id, channel, target"
    )
    op.drop_table("deliveries")
    op.rename_table("deliveries_v5", "deliveries")
    op.execute("DELETE FROM alert_actions WHERE action = 'on_scene'")
    with op.batch_alter_table("alert_actions") as batch:
        batch.drop_constraint("ck_alert_actions_action", type_="check")
        batch.create_check_constraint("ck_alert_actions_action", _in("action", OLD_ACTIONS))
        batch.drop_index("ix_alert_actions_incident_id")
        batch.drop_column("incident_id")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_index("ix_alerts_incident_id")
        batch.drop_constraint("fk_alerts_incident_id_incidents", type_="foreignkey")
        batch.drop_column("incident_id")
        batch.drop_column("rule")
        batch.drop_column("severity")
    op.drop_index("ix_incidents_opened_at", "incidents")
    op.drop_index("ix_incidents_status_opened_at", "incidents")
    op.drop_index("ix_incidents_grid_category_status", "incidents")
    op.drop_table("incidents")
