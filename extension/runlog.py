"""The run's log: what goes to ``extension.log`` and to the log blob, always with SAS signatures redacted.

Modules log through ordinary module loggers; while a run is active, :func:`capture` attaches a
handler to the package logger that keeps every line for the log blob (the real handler uploads the
whole accumulated log each time) and appends it to ``extension.log`` unless writes are on hold,
which they are while file systems are frozen (a write to a frozen file system would block).
"""
from __future__ import annotations

import contextlib
import logging
import re
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

PACKAGE_LOGGER = "extension"
SHELL_LOG = "shell.log"
SHELL_LOG_TAIL_LINES = 10

# sig=... in a URL or text, also URL-encoded (sig%3D...) when a SAS URL sits inside another URL.
_SIG = re.compile(r"(?i)(sig(?:=|%3D))[^&\s\"'<>;,)\]}]+")
_LEVELS = {
    logging.DEBUG: "Verbose",
    logging.INFO: "Info",
    logging.WARNING: "Warning",
    logging.ERROR: "Error",
    logging.CRITICAL: "Error",
}
# A handler has no formatException of its own (that is the Formatter's): the traceback of
# log.exception is formatted by this plain one.
_TRACEBACKS = logging.Formatter()


def redact(text: str) -> str:
    """Replace every SAS signature value with ``REDACTED`` (``sig=abc`` -> ``sig=REDACTED``)."""
    return _SIG.sub(r"\1REDACTED", text)


class RunLog(logging.Handler):
    """Collects redacted lines in the real handler's ``<utc>  <Level>  <message> `` form."""

    def __init__(self, log_file: Path | None) -> None:
        super().__init__(level=logging.DEBUG)
        self._file = log_file
        self._lines: list[str] = []
        self._pending: list[str] = []
        self._held = False
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message = f"{message} {_TRACEBACKS.formatException(record.exc_info)}"
        except Exception:  # a bad format string must not kill the run that is being logged
            self.handleError(record)
            return
        stamp = datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
        line = f"{stamp}  {_LEVELS.get(record.levelno, 'Info')}  {redact(message)} "
        with self._guard:
            self._lines.append(line)
            self._pending.append(line)
            if not self._held:
                self._flush_locked()

    def text(self) -> str:
        """The whole log so far, as uploaded to the log blob."""
        with self._guard:
            return "\n".join(self._lines) + "\n"

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Keep lines in memory only (the freeze window); flush them to the file afterwards."""
        with self._guard:
            self._held = True
        try:
            yield
        finally:
            with self._guard:
                self._held = False
                self._flush_locked()

    def _flush_locked(self) -> None:
        if self._file is None or not self._pending:
            self._pending.clear()
            return
        try:
            with self._file.open("a", encoding="utf-8") as fh:
                fh.write("\n".join(self._pending) + "\n")
        except OSError:
            pass  # the blob copy still has every line; a full disk must not fail the backup
        self._pending.clear()


@contextlib.contextmanager
def capture(log_file: Path | None) -> Iterator[RunLog]:
    """Attach a :class:`RunLog` to the package logger for the duration of one run."""
    handler = RunLog(log_file)
    logger = logging.getLogger(PACKAGE_LOGGER)
    previous = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    # Only the redacting handler sees the run: not the root logger's handlers, nor Python's
    # last-resort stderr handler (which would copy warnings into the daemon's output unredacted).
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous[0])
        logger.propagate = previous[1]


def detach_run_logs() -> None:
    """Take every run log off the package logger: a daemon forked from enable, inside enable's
    :func:`capture`, starts its own and must not write its lines into enable's as well."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    for handler in [h for h in logger.handlers if isinstance(h, RunLog)]:
        logger.removeHandler(handler)


def shell_log(log_folder: Path, line: str) -> None:
    """One line in ``shell.log``, where the real ``handle.sh`` notes each command it runs."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    try:
        log_folder.mkdir(parents=True, exist_ok=True)
        with (log_folder / SHELL_LOG).open("a", encoding="utf-8") as fh:
            fh.write(f"{stamp} {line}\n")
    except OSError:
        pass  # a note about the run must never stop the run


def shell_log_tail(log_folder: Path) -> str:
    """``Tail of shell script log:`` and the last lines of ``shell.log``, closing the log blob."""
    try:
        lines = (log_folder / SHELL_LOG).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    tail = "".join(f"{redact(line)}\n" for line in lines[-SHELL_LOG_TAIL_LINES:])
    return f"Tail of shell script log:\n{tail}"
