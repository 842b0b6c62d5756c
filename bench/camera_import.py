"""How long a bulk CSV import of cameras takes through the real API (uvicorn on loopback, HTTP, an admin's
token), on SQLite and on PostgreSQL: first import (all created), the same file again (all unchanged), and a
dry run. The issue's target: 10,000 rows in under a minute.

    .venv/bin/python bench/camera_import.py --rows 10000
    createdb -h 127.0.0.1 -U postgres bench_import && .venv/bin/python bench/camera_import.py --rows 10000 \
        --postgres postgresql+psycopg://postgres@127.0.0.1:5432/bench_import
"""

from __future__ import annotations

import argparse
import csv
import io
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

# Run as a script, bench/ comes first on sys.path, and bench/ingest.py would shadow the `ingest` package.
BENCH = Path(__file__).resolve().parent
sys.path[:] = [str(BENCH.parent), *(p for p in sys.path if Path(p or ".").resolve() != BENCH)]

from gridwatch.alerting import sync_organisation  # noqa: E402
from gridwatch.api import create_app  # noqa: E402
from gridwatch.api_state import AppState  # noqa: E402
from gridwatch.auth.tokens import new_api_token  # noqa: E402
from gridwatch.settings import Settings  # noqa: E402
from storage.metadata import MetadataDB, UserRecord  # noqa: E402
from storage.objectstore import ObjectStore  # noqa: E402

GRIDS = 40


def _csv(rows: int) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "name", "village", "grid", "url", "record_url", "detect_fps", "enabled"])
    for i in range(rows):
        host = f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}"
        writer.writerow(
            [
                f"cam-{i:06d}",
                f"村口 {i} 号 East gate",
                "",
                f"grid-{i % GRIDS}",
                f"rtsp://admin:pw-{i}@{host}:554/Streaming/Channels/102",
                f"rtsp://admin:pw-{i}@{host}:554/Streaming/Channels/101",
                "2",
                "true",
            ]
        )
    return out.getvalue()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run(rows: int, database_url: str, data_dir: Path) -> dict[str, float]:
    settings = Settings.model_validate(
        {
            "data_dir": str(data_dir),
            "villages": [{"id": "v1", "name": "V1"}],
            "teams": [{"id": "t1", "name": "T1"}],
            "grids": [
                {"id": f"grid-{g}", "name": f"G{g}", "village": "v1", "team": "t1"} for g in range(GRIDS)
            ],
        }
    )
    db = MetadataDB(database_url)
    db.migrate()
    sync_organisation(settings, db)
    new = new_api_token()
    token = new.token
    db.upsert_users([UserRecord("bench-admin", "Bench", "admin")])
    db.create_api_token(user_id="bench-admin", name="bench", token_hash=new.token_hash, prefix=new.prefix)
    state = AppState(db, ObjectStore("127.0.0.1:9", "k", "s", "unused"), 30, settings=settings)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    content = _csv(rows).encode()
    print(f"  {rows} rows, {len(content) / 1e6:.2f} MB", flush=True)
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
        timeout=600,
    )
    times: dict[str, float] = {}
    for phase, query in (("dry run", "?dry_run=true"), ("first import", ""), ("same file again", "")):
        started = time.perf_counter()
        r = client.post(f"/api/v1/cameras/import{query}", content=content)
        times[phase] = time.perf_counter() - started
        r.raise_for_status()
        print(f"  {phase:16s} {times[phase]:6.2f} s  {r.json()}", flush=True)
    assert db.count_cameras() == rows
    server.should_exit = True
    thread.join(10)
    db.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--postgres", metavar="URL", help="Also on this (empty) PostgreSQL database")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print("SQLite:", flush=True)
        run(args.rows, f"sqlite:///{tmp}/bench.db", Path(tmp))
        if args.postgres:
            print("PostgreSQL:", flush=True)
            run(args.rows, args.postgres, Path(tmp))


if __name__ == "__main__":
    main()
