"""The `gridwatch` command line."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from gridwatch.auth.cli import users_app
from gridwatch.logs import setup_logging
from gridwatch.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from gridwatch.cluster.view import ClusterView

app = typer.Typer(help="GridWatch: village camera ingestion, detection and alerts.", no_args_is_help=True)
models_app = typer.Typer(help="Detector models.", no_args_is_help=True)
media_app = typer.Typer(help="Test and demo media.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(media_app, name="media")
app.add_typer(users_app, name="users")

ConfigArg = Annotated[Path, typer.Argument(help="YAML config file", envvar="GRIDWATCH_CONFIG")]
log = logging.getLogger("gridwatch")


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def run(
    config: ConfigArg,
    duration: Annotated[float, typer.Option(help="Stop after this many seconds (0: until Ctrl-C)")] = 0.0,
) -> None:
    """Run everything in one process: cameras, detectors, alerts, storage and the API."""
    _serve(config, "all", duration)


@app.command()
def worker(
    config: ConfigArg,
    duration: Annotated[float, typer.Option(help="Stop after this many seconds (0: until SIGTERM)")] = 0.0,
) -> None:
    """Run a detection worker of a split deployment: it takes leases on as many cameras as its capacity
    allows (shared with the other workers through Redis), detects, records and raises alerts. SIGTERM
    finishes the clips, then hands the cameras back."""
    _serve(config, "worker", duration)


def _serve(config: Path, mode: Literal["all", "worker"], duration: float) -> None:
    from gridwatch.runtime import Runtime

    settings = _settings(config)
    setup_logging(settings.log_level, settings.log_format)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    runtime = Runtime(settings, mode=mode)
    try:
        runtime.start()
    except Exception as exc:
        log.error("start failed: %s", exc)
        raise typer.Exit(1) from None
    if runtime.api_port:
        typer.echo(f"API: http://{settings.api.host}:{runtime.api_port}/api/v1/alerts  (Ctrl-C stops)")
    started = time.monotonic()
    try:
        while not stop.wait(1.0):
            if duration and time.monotonic() - started >= duration:
                break
    finally:
        leases = ", releasing leases" if mode == "worker" else ""
        log.info("stopping: finishing clips%s, shutting down", leases)
        runtime.stop()


@app.command()
def api(config: ConfigArg) -> None:
    """Serve only the HTTP API (against configured external Redis, S3 and database)."""
    import uvicorn

    from gridwatch.api import AppState, create_app
    from storage.metadata import MetadataDB
    from storage.objectstore import ObjectStore

    settings = _settings(config)
    setup_logging(settings.log_level, settings.log_format)
    if settings.s3.endpoint is None:
        typer.echo(
            "error: `gridwatch api` needs s3.endpoint (use `gridwatch run` for embedded servers)", err=True
        )
        raise typer.Exit(2)
    db = MetadataDB(settings.database_url())
    db.create_schema()
    store = ObjectStore(
        settings.s3.endpoint,
        settings.s3.access_key,
        settings.s3.secret_key.get_secret_value(),
        settings.s3.bucket,
        secure=settings.s3.secure,
        region=settings.s3.region,
    )
    publish, feed, health, live = None, None, None, None
    if settings.redis.url is not None:  # status changes reach the dispatcher; the live feed reads alerts
        from alerts.bus import AlertBus
        from gridwatch.camera_states import RedisCameraStates
        from gridwatch.feed import FeedHub
        from gridwatch.live_frames import RedisFrames

        bus = AlertBus.from_url(settings.redis.url.get_secret_value(), settings.redis.stream)
        publish = bus.publish
        feed = FeedHub(bus.client, bus.stream)
        feed.start()
        # the camera wall: the states the workers publish; a camera's picture: from its worker
        health = RedisCameraStates(bus.client, lambda: [c.id for c in db.list_cameras()]).health
        live = RedisFrames(bus.client)
    state = AppState(
        db,
        store,
        settings.s3.presign_seconds,
        camera_health=health,
        settings=settings,
        publish=publish,
        feed=feed,
        live=live,
    )
    uvicorn.run(
        create_app(state),
        host=settings.api.host,
        port=settings.api.port,
        log_level="info",
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,  # json: ours
        timeout_graceful_shutdown=3,
    )


@app.command()
def dispatcher(config: ConfigArg) -> None:
    """Run only the dispatcher: incidents, notifications and escalation (external Redis and database)."""
    from alerts.bus import AlertBus
    from gridwatch.alerting import sync_organisation
    from gridwatch.dispatch import build_dispatch_loop, build_dispatcher, build_status_relay
    from storage.metadata import MetadataDB

    settings = _settings(config)
    setup_logging(settings.log_level, settings.log_format)
    if settings.redis.url is None or settings.database.url is None:
        typer.echo(
            "error: `gridwatch dispatcher` needs redis.url and database.url (the workers' Redis and "
            "database; use `gridwatch run` for embedded servers)",
            err=True,
        )
        raise typer.Exit(2)
    db = MetadataDB(settings.database_url())
    db.create_schema()
    sync_organisation(settings, db)
    bus = AlertBus.from_url(settings.redis.url.get_secret_value(), settings.redis.stream)
    worker = build_dispatcher(settings, db, bus.client, publish=bus.publish)
    loop = build_dispatch_loop(settings, bus, worker)
    relay = build_status_relay(settings, bus, worker)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    loop.start()
    if relay is not None:
        relay.start()
    log.info("dispatcher running: %d notifier(s)", len(worker.channels))
    try:
        while not stop.wait(1.0) and loop.is_alive():
            pass
    finally:
        if relay is not None:
            relay.stop()
        loop.stop()
        worker.close()
        bus.close()
        db.close()


@app.command()
def cluster(
    config: ConfigArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    prefix: Annotated[
        str, typer.Option(help="Key prefix of the cluster in Redis (the workers use gridwatch)")
    ] = "gridwatch",
) -> None:
    """Show the worker cluster, read-only: live workers (capacity, heartbeat, leases held), cameras leased
    and not, leases of workers that are not live, the balance. Exit 2 if Redis or the database cannot be
    read."""
    import redis

    from alerts.redis_connect import connect as connect_redis
    from gridwatch.cluster.keys import ClusterKeys
    from gridwatch.cluster.view import read_cluster_view
    from gridwatch.logs import mask_secrets

    settings = _settings(config)
    if settings.redis.url is None:
        typer.echo("error: `gridwatch cluster` needs redis.url (the Redis the workers share)", err=True)
        raise typer.Exit(2)
    url = settings.redis.url.get_secret_value()
    cameras = _enabled_camera_ids(settings)
    try:
        client = connect_redis(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            view = read_cluster_view(client, cameras, ClusterKeys(prefix))
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError) as exc:
        typer.echo(f"error: cannot read the cluster from Redis at {mask_secrets(url)}: "
                   f"{mask_secrets(str(exc))}", err=True)  # fmt: skip
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(view.to_dict(), indent=2))
    else:
        _print_cluster(view)


def _enabled_camera_ids(settings: Settings) -> list[str] | None:
    """The enabled cameras' ids from database.url (what the workers assign); None without one: the
    default SQLite file is `gridwatch run`'s, not a split deployment's. Exit 2 if it cannot be read."""
    if settings.database.url is None:
        return None
    from gridwatch.logs import mask_secrets
    from storage.metadata import MetadataDB

    try:
        db = MetadataDB(settings.database_url())
        try:
            return sorted(c.id for c in db.list_cameras() if c.enabled)
        finally:
            db.close()
    except Exception as exc:
        reason = mask_secrets(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        typer.echo(f"error: cannot read the cameras from the database at "
                   f"{mask_secrets(settings.database_url())}: {reason}", err=True)  # fmt: skip
        raise typer.Exit(2) from None


def _print_cluster(view: ClusterView) -> None:
    """`gridwatch cluster` as aligned text: the live workers' table, then the totals and the balance."""
    header = ("worker", "host", "pid", "up", "capacity", "heartbeat", "leases")
    rows = [
        (w.worker_id, w.host or "-", "-" if w.pid is None else str(w.pid),
         "-" if w.started_at is None else _duration(view.server_time - w.started_at),
         f"{w.capacity} (settling)" if w.settling else str(w.capacity), f"in {w.expires_in_s:.1f} s",
         str(w.leases))
        for w in view.workers
    ]  # fmt: skip
    typer.echo(f"cluster {view.prefix}: {view.live_workers} live worker(s), capacity {view.total_capacity}")
    if rows:
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            typer.echo("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if view.enabled_cameras is None:
        typer.echo(f"cameras: enabled unknown (no database.url), {view.cameras_leased} leased")
    else:
        shown = ", ".join(view.unleased_sample)
        more = " ..." if (view.cameras_unleased or 0) > len(view.unleased_sample) else ""
        typer.echo(f"cameras: {view.enabled_cameras} enabled, {view.cameras_leased} leased, "
                   f"{view.cameras_unleased} not leased{f': {shown}{more}' if shown else ''}")  # fmt: skip
    stale = ", ".join(f"{w} {n}" for w, n in view.stale_by_worker.items())
    why = f" (workers not live; the leases run out by their TTL): {stale}" if stale else ""
    typer.echo(f"stale leases: {view.stale_leases}{why}")
    typer.echo(
        f"balance: max {view.max_leases}, mean {view.mean_leases:.2f} leases per live worker "
        f"(max/mean {view.max_over_mean:.2f})"
    )


def _duration(seconds: float) -> str:
    """`3d04h`, `2h03m`, `5m12s`, `40s`: a worker's uptime, to a glance."""
    s = max(0, int(seconds))
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _prepare(build: Callable[..., dict[str, Path]], target: Path, force: bool) -> None:
    """Run an idempotent preparation step with progress lines; a failure is one clear line and exit 1."""
    try:
        paths = build(target, progress=lambda line: typer.echo(line), force=force)
    except Exception as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")


ForceOption = Annotated[bool, typer.Option(help="Rebuild even if present")]


@models_app.command("prepare")
def models_prepare(
    models_dir: Annotated[
        Path, typer.Option(help="Model cache directory", envvar="GRIDWATCH_MODELS_DIR")
    ] = Path(".cache/models"),
    force: ForceOption = False,
) -> None:
    """Fetch (from package registries only) and convert the detector models into the cache."""
    from detect.models.prepare import prepare_models

    _prepare(prepare_models, models_dir, force)


@media_app.command("prepare")
def media_prepare(
    media_dir: Annotated[Path, typer.Option(help="Media directory", envvar="GRIDWATCH_MEDIA_DIR")] = Path(
        ".cache/media"
    ),
    force: ForceOption = False,
) -> None:
    """Build the test clips (people, flames, empty scene) from offline sources."""
    from ingest.simulator.media import prepare_media

    _prepare(prepare_media, media_dir, force)


@app.command()
def simulate(
    media_dir: Annotated[Path, typer.Option(help="Media directory", envvar="GRIDWATCH_MEDIA_DIR")] = Path(
        ".cache/media"
    ),
    port: Annotated[int, typer.Option(help="RTSP port on 127.0.0.1 (0: a free one)")] = 0,
    loop: Annotated[bool, typer.Option(help="Replay clips forever")] = True,
) -> None:
    """Serve the test clips as RTSP cameras on 127.0.0.1 until Ctrl-C."""
    from ingest.simulator.media import prepare_media
    from ingest.simulator.server import Mount, RtspSimulator

    media = prepare_media(media_dir, progress=lambda line: typer.echo(line))
    mounts = [Mount(name=name, kind="file", path=path, loop=loop) for name, path in media.items()]
    mounts.append(Mount(name="pattern", kind="pattern"))
    simulator = RtspSimulator(mounts, port=port)
    simulator.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    typer.echo(json.dumps({"ready": True, "cameras": {m.name: simulator.url(m.name) for m in mounts}}))
    sys.stdout.flush()
    try:
        stop.wait()
    finally:
        simulator.stop()


@app.command()
def probe(
    url: Annotated[str, typer.Argument(help="rtsp:// or rtsps:// camera URL")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    seconds: Annotated[float, typer.Option(help="Seconds of stream to sample")] = 4.0,
    timeout: Annotated[float, typer.Option(help="Open and read timeout, seconds")] = 10.0,
) -> None:
    """Connect to a camera and report codec, resolution, fps, GOP, bitrate and audio (exit 1 on failure)."""
    from ingest.probe import format_probe, probe_camera

    result = probe_camera(url, open_timeout_s=timeout, read_timeout_s=timeout, sample_seconds=seconds)
    typer.echo(json.dumps(result.to_dict(), indent=2) if as_json else format_probe(result))
    if not result.ok:
        raise typer.Exit(1)


@app.command("check-config")
def check_config(config: ConfigArg) -> None:
    """Validate a config file and print a summary (secrets hidden)."""
    settings = _settings(config)
    typer.echo(
        f"{config}: ok: {len(settings.cameras)} camera(s), {len(settings.villages)} village(s), "
        f"{len(settings.grids)} grid(s), {len(settings.rules)} rule(s)"
    )


@app.command("secret-key")
def secret_key() -> None:
    """Print a new key for `secret_key` (GRIDWATCH_SECRET_KEY): it seals camera passwords in the database.
    Give every process of a deployment the same key, and keep it with the database's backups."""
    from gridwatch.sealing import new_key

    typer.echo(new_key())


if __name__ == "__main__":
    app()
