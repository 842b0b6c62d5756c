"""Logging set-up shared by the commands: Rich on a terminal, plain lines, or one JSON object a line.

Whatever the format, a last filter on the handler masks credentials that slipped into a record (the code
redacts what it logs; this is the safety net): the password of any `scheme://user:password@` URL, the
secret part of `gwt_` API tokens, and `password=`/`token=`-style query values, in the message, the
`extra=` fields and the traceback.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Literal

from rich.logging import RichHandler

LogFormat = Literal["auto", "text", "json"]

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:@/\s]*):[^/\s]*@")
# the same URL %-encoded in a query string (`?next=rtsp%3A%2F%2Fadmin%3Apass%40cam%2F`, as access logs show)
_ENCODED_URL_PASSWORD = re.compile(
    r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*%3A%2F%2F(?:(?!%3A|%40|%2F)[^/&\s@])*)%3A(?:(?!%2F)[^/&\s])*%40",
    re.IGNORECASE,
)
# possessive: an already masked `gwt_abcd1234_***` does not match again
_API_TOKEN = re.compile(r"\bgwt_(?P<prefix>[0-9a-f]{8}_)?+[A-Za-z0-9_-]++")
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pwd|secret|token|access_token|api_key|key)=)[^&#\s\"']+", re.IGNORECASE
)
# what every LogRecord has; the rest of its attributes came from `extra=`
_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_NOT_FIELDS = _RECORD_FIELDS | {"color_message"}  # uvicorn's message with terminal colours: noise in JSON


def mask_secrets(text: str) -> str:
    """`text` with URL passwords, API tokens' secrets and secret query values replaced by ***."""
    text = _URL_PASSWORD.sub(r"\g<head>:***@", text)
    text = _ENCODED_URL_PASSWORD.sub(r"\g<head>%3A***%40", text)
    text = _API_TOKEN.sub(lambda m: f"gwt_{m.group('prefix') or ''}***", text)
    return _SECRET_QUERY.sub(r"\g<key>***", text)


class MaskSecrets(logging.Filter):
    """Masks credentials in a record's message, string `extra=` fields and traceback (see `mask_secrets`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        for name, value in list(record.__dict__.items()):
            if name not in _RECORD_FIELDS and isinstance(value, str):
                setattr(record, name, mask_secrets(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_secrets(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: `ts` (ISO 8601, UTC), `level`, `logger`, `message`, the `extra=` fields
    (camera, alert...), and `exc_info`/`stack_info` as text when the record has them."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _NOT_FIELDS and name not in entry:
                entry[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)


def make_handler(log_format: LogFormat = "auto") -> logging.Handler:
    """The stderr handler for `log_format` ("auto": Rich on a terminal, plain lines otherwise)."""
    handler: logging.Handler
    if log_format == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    elif log_format == "auto" and sys.stderr.isatty():
        handler = RichHandler(show_path=False, rich_tracebacks=False, markup=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s", datefmt="%H:%M:%S"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(MaskSecrets())
    return handler


def setup_logging(level: str = "INFO", log_format: LogFormat = "auto") -> None:
    """Log to stderr at `level` in `log_format` (the `log_format` setting, env GRIDWATCH_LOG_FORMAT)."""
    logging.basicConfig(level=level, handlers=[make_handler(log_format)], force=True)
    for noisy in ("urllib3", "libav", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
