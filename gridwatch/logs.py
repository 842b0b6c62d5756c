"""Logging set-up shared by the commands."""

from __future__ import annotations

import logging

from rich.logging import RichHandler


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        format="%(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False, markup=False)],
        force=True,
    )
    for noisy in ("urllib3", "libav", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
