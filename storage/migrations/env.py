"""Alembic environment for the metadata database.

At run time `storage.migrations.upgrade_to_head` hands over a connection in `config.attributes`. Developers
run alembic from the repository root (alembic.ini there), with the URL from `-x url=...`, `GRIDWATCH_DB_URL`
or a SQLite file under data/:  `alembic -x url=sqlite:///data/gridwatch.db revision --autogenerate -m "..."`.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from storage.metadata import make_engine, model_metadata

config = context.config
target_metadata = model_metadata()
if config.config_file_name is not None and "connection" not in config.attributes:
    fileConfig(config.config_file_name)  # the developer CLI; at run time the application's logging applies


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite can only ALTER by recreating the table
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _developer_url() -> str:
    return (
        context.get_x_argument(as_dictionary=True).get("url")
        or os.environ.get("GRIDWATCH_DB_URL")
        or config.get_main_option("sqlalchemy.url")
        or "sqlite:///data/gridwatch.db"
    )


def run_offline() -> None:
    context.configure(url=_developer_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    engine = make_engine(_developer_url())
    try:
        with engine.connect() as conn:
            _configure(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
