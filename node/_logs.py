"""Logging: readable by a person by default, one JSON object per line with ``format=json``.

Structured fields travel in ``extra={...}``: the text format appends them as
``key=value``, the JSON format as keys of the object.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

# Attributes every LogRecord has; anything else came from ``extra``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + (
        f".{int(record.msecs):03d}Z"
    )


class TextFormatter(logging.Formatter):
    """``2026-11-22T00:40:01.123Z INFO  node: ready api=http://127.0.0.1:7311``"""

    def format(self, record: logging.LogRecord) -> str:
        name = record.name.removeprefix("mercato.")
        line = f"{_timestamp(record)} {record.levelname:<5} {name}: {record.getMessage()}"
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        if extra:
            line += " " + extra
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then the structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        obj.update(_fields(record))
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str)


class _SourceFilter(logging.Filter):
    """mercato's records at the chosen level; other libraries' only from WARNING up.

    py-libp2p logs routine events (a failed dial, a closed stream) as errors, so
    its records are shown only when debugging.
    """

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "mercato" or record.name.startswith("mercato."):
            return record.levelno >= self.level
        if record.name.startswith("libp2p"):
            return self.level <= logging.DEBUG and record.levelno >= logging.WARNING
        return record.levelno >= logging.WARNING


def configure_logging(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send logs to ``stream`` (stderr) in ``fmt`` ("text" or "json"), mercato's at ``level``.

    The handler sits on the root logger, so it also catches libraries that log
    there; a filter keeps their noise out (see `_SourceFilter`).
    """
    numeric = getattr(logging, level.upper())
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_SourceFilter(numeric))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(min(numeric, logging.WARNING))
    ours = logging.getLogger("mercato")
    ours.handlers[:] = []
    ours.setLevel(logging.NOTSET)
    ours.propagate = True
