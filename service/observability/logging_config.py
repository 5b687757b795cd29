"""Process-wide logging set-up: human-readable text or one JSON object per line.

Called once the settings are known (``PULMOSEG_LOG_LEVEL``, ``PULMOSEG_LOG_FORMAT``), so the
level and format users set are the ones they get. JSON lines suit log collectors (Loki,
CloudWatch, ...): each holds ``time``, ``level``, ``logger``, ``message`` and any ``extra=``
fields. Nothing here adds identifiers; callers log hashes (``service.core.identifiers``).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from service.core.options import Option

LOG_LEVELS: tuple[str, ...] = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: LogRecord attributes that are not ``extra=`` fields.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class LogFormat(Option):
    """How log lines look: ``text`` for people, ``json`` for machines."""

    TEXT = "text"
    JSON = "json"


class JsonFormatter(logging.Formatter):
    """One JSON object per record; values JSON cannot hold are written as strings."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in out:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class _ConfiguredHandler(logging.StreamHandler[TextIO]):
    """Marks the handler this module installed, so a second call replaces it.

    Without an explicit stream it writes to whatever ``sys.stderr`` is at the time of each
    record (as ``logging.lastResort`` does), so redirected or captured stderr keeps working.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        logging.Handler.__init__(self)
        self._fixed_stream = stream

    @property
    def stream(self) -> TextIO:
        return self._fixed_stream if self._fixed_stream is not None else sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        self._fixed_stream = value


#: Libraries whose INFO and DEBUG records quote DICOM UIDs of the study (highdicom: "copy
#: Patient-related attributes from dataset <SOPInstanceUID>" for every SEG): kept at WARNING.
UID_LOGGING_LIBRARIES = ("highdicom",)


def configure_logging(
    level: str | int, fmt: LogFormat | str = LogFormat.TEXT, stream: TextIO | None = None
) -> logging.Handler:
    """Send the root logger's records at ``level`` and above to ``stream`` (stderr) as ``fmt``.

    Replaces the handler of an earlier call (and nothing else), so a command can set logging
    up provisionally and again once its settings are loaded.
    """
    text = str(fmt).strip().lower()
    if text not in list(LogFormat):
        raise ValueError(f"Log format must be one of 'text', 'json', got {fmt!r}.")
    fmt = LogFormat(text)
    if isinstance(level, str):
        name = level.strip().upper()
        if name not in LOG_LEVELS:
            raise ValueError(f"Log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}.")
        level = logging.getLevelNamesMapping()[name]
    handler = _ConfiguredHandler(stream)
    formatter = JsonFormatter() if fmt is LogFormat.JSON else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _ConfiguredHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    for name in UID_LOGGING_LIBRARIES:  # their INFO/DEBUG lines name source instance UIDs
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    logging.captureWarnings(True)  # Python warnings become records too (JSON lines stay JSON)
    return handler
