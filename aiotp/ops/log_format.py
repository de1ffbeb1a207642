"""Logging set-up for the runner: plain lines for a terminal, JSON lines for a log collector.

Covers the runner's process: its records and its warnings. Worker processes of the process
profile write their own stderr (a tool's prints, a crash before the worker could report it),
which reaches the same stream unformatted; what a worker reports over its pipe (deaths, setup
failures) is logged here, formatted.

JSON lines carry the record's time (ISO 8601, UTC), level, logger, message, process id, the
thread name, and the formatted traceback under ``"exc"`` when there is one, so that a collector
(Loki, CloudWatch, journald's JSON mode) can filter by logger (``aiotp.pool.ml``) and level
without parsing free text.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import TextIO

__all__ = ["FORMATS", "JsonLinesFormatter", "configure_logging"]

FORMATS = ("plain", "json")
_PLAIN = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception:  # a bad %-argument: still one valid line, with what was given
            message = f"{record.msg!r} % {record.args!r}"
        entry: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
            "pid": record.process,
            "thread": record.threadName,
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str | int, fmt: str, stream: TextIO | None = None) -> None:
    """Send the root logger to `stream` (stderr) at `level`, as plain text or JSON lines.

    A bad level or format raises `ValueError` naming it (the runner turns that into one line
    and exit status 2, before anything starts).
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, got {fmt!r}")
    if isinstance(level, str):
        resolved = logging.getLevelName(level.upper())
        if not isinstance(resolved, int):
            raise ValueError(f"unknown log level {level!r} (DEBUG, INFO, WARNING, ERROR)")
        level = resolved
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonLinesFormatter() if fmt == "json" else logging.Formatter(_PLAIN))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings become records too: one format for everything
