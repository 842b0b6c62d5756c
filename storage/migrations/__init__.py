"""Alembic migrations of the metadata database, run from code at start (no alembic.ini needed).

`upgrade_to_head(engine)` is idempotent and safe when many processes start at once: PostgreSQL takes a
session advisory lock around the upgrade, SQLite an exclusive lock on a file next to the database. A database
made by the schema of before migrations (`create_all` of cameras and alerts, no `alembic_version`) is adopted:
stamped at the first revision, which is exactly that schema, then upgraded, so its rows stay.
"""

from __future__ import annotations

import fcntl
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

__all__ = [
    "LEGACY_REVISION",
    "LEGACY_TABLES",
    "MIGRATION_LOCK_KEY",
    "alembic_config",
    "current_revision",
    "downgrade",
    "head_revision",
    "upgrade_to_head",
]

log = logging.getLogger(__name__)

SCRIPT_DIR = Path(__file__).resolve().parent
# pg_advisory_lock key (bigint) every GridWatch process agrees on; the text of "gridwatch-migrate" in hex.
MIGRATION_LOCK_KEY = 0x67772D6D69677261
LEGACY_TABLES = frozenset({"cameras", "alerts"})
LEGACY_REVISION = "0001"
VERSION_TABLE = "alembic_version"

# alembic's `context` is one module-level proxy: two commands at once in one process would trample it
_in_process = threading.Lock()


def alembic_config(connection: Connection | None = None) -> Config:
    """An alembic Config for the migrations in this package; `connection` is the one env.py migrates."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_DIR).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade_to_head(engine: Engine) -> None:
    """Bring the schema to the newest revision; a no-op when it is there already."""
    with _in_process, engine.connect() as conn, _migration_lock(conn, engine):
        cfg = alembic_config(conn)
        tables = set(inspect(conn).get_table_names())
        conn.rollback()  # the inspection began a transaction; alembic wants to begin its own
        if VERSION_TABLE not in tables and tables & LEGACY_TABLES:
            missing = LEGACY_TABLES - tables
            if missing:
                raise RuntimeError(
                    f"metadata database has {sorted(tables & LEGACY_TABLES)} but not {sorted(missing)} "
                    "and no alembic_version: not a GridWatch schema this code can adopt"
                )
            log.info("adopting a metadata database made before migrations: stamping %s", LEGACY_REVISION)
            command.stamp(cfg, LEGACY_REVISION)
        command.upgrade(cfg, "head")


def downgrade(engine: Engine, revision: str) -> None:
    """Step the schema back to `revision` ("base" drops every table). For tests and operators."""
    with _in_process, engine.connect() as conn, _migration_lock(conn, engine):
        command.downgrade(alembic_config(conn), revision)


@contextmanager
def _migration_lock(conn: Connection, engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "postgresql":
        with _pg_advisory_lock(conn):
            yield
    elif engine.dialect.name == "sqlite":
        with _sqlite_file_lock(engine), _sqlite_foreign_keys_off(conn):
            yield
    else:  # pragma: no cover - MetadataDB refuses other backends
        raise ValueError(f"no migration lock for {engine.dialect.name!r}")


@contextmanager
def _pg_advisory_lock(conn: Connection) -> Iterator[None]:
    # A session lock, not a transaction one: it holds across the stamp and upgrade transactions.
    conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    conn.commit()
    try:
        yield
    finally:
        conn.rollback()  # a failed upgrade leaves an aborted transaction; unlock needs a working one
        conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
        conn.commit()


@contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    database = engine.url.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        yield  # one connection in one process: nobody to race with
        return
    lock_path = Path(database).expanduser().resolve().with_name(Path(database).name + ".migrate-lock")
    with open(lock_path, "a+b") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


@contextmanager
def _sqlite_foreign_keys_off(conn: Connection) -> Iterator[None]:
    """Batch migrations recreate tables (copy, drop, rename); with foreign keys enforced the drop would fail
    or cascade. The pragma only works outside a transaction; the keys are checked once the upgrade is done."""
    conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
    conn.commit()
    try:
        yield
        problems = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        conn.rollback()
        if problems:
            raise RuntimeError(f"foreign keys broken by the migration: {problems[:5]}")
    finally:
        conn.rollback()
        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        conn.commit()
