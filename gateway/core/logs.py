"""Logging for operators: one line per message (Message-ID, case, outcome, reason), as text or JSON."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TextIO

if TYPE_CHECKING:
    from gateway.core.config import LogConfig


class Outcome(Protocol):
    """What the message line reports of a pipeline result (gateway.flow.context.Result)."""

    @property
    def outcome(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def case_id(self) -> int | None: ...
    @property
    def message_id(self) -> str: ...


# The fields a message line carries; the JSON format puts them at the top level.
MESSAGE_FIELDS = ("message_id", "case", "outcome", "reason", "source")

message_log = logging.getLogger("gateway.message")


def message_outcome(source: str, result: Outcome) -> None:
    """The line that answers "what happened to this message?" for SMTP, the pipe, IMAP and replays."""
    message_log.info(
        "%s %s message_id=%s case=%s reason=%s",
        source,
        result.outcome,
        result.message_id or "-",
        result.case_id if result.case_id is not None else "-",
        json.dumps(result.reason, ensure_ascii=False),
        extra={
            "message_id": result.message_id,
            "case": result.case_id,
            "outcome": result.outcome,
            "reason": result.reason,
            "source": source,
        },
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per line, so a log shipper needs no parsing rules."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in MESSAGE_FIELDS:
            if name in record.__dict__:
                entry[name] = record.__dict__[name]
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is when a line is logged, so a swapped stream is never stale."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def setup(config: LogConfig | None = None, verbose: bool = False) -> None:
    """Log to stderr (journald keeps it) in the configured format and level; calling again reconfigures."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, StderrHandler)]:
        root.removeHandler(old)
    handler = StderrHandler()
    json_format = config is not None and config.format == "json"
    handler.setFormatter(JsonFormatter() if json_format else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel("DEBUG" if verbose else (config.level.upper() if config else "INFO"))
    # aiosmtpd logs every connection and command at INFO; one line per message is ours to write.
    logging.getLogger("mail.log").setLevel(logging.DEBUG if verbose else logging.WARNING)
