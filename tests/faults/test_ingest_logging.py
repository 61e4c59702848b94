"""Hostile log records: a log call never raises, never shows a secret, and still says what happened."""
from __future__ import annotations

import io
import logging
import sys

import pytest

from shared.logs import configure_logging

SECRET = "Tywk2BROXL1zv3D"
SAS_URL = f"https://acct.blob.core.windows.net/vhds/os.vhd?sv=2026-10-06&sp=c&sig={SECRET}"
LEVELS = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]


class _Unprintable:
    """An argument whose __str__ raises (a half-built SDK object, a closed stream...)."""

    def __str__(self) -> str:
        raise RuntimeError(f"no str for {SAS_URL}")


class _Opaque(_Unprintable):
    """An argument whose __str__ and __repr__ both raise."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


class _BadError(Exception):
    def __str__(self) -> str:
        raise ValueError("cannot describe myself")


HOSTILE = {
    "non-UTF-8 message body": ("job-42 message body %s", (b"\xff\xfe\x00 " + SAS_URL.encode(),)),
    "non-UTF-8 bytes as the message": (b"job-42 \xff\xfe " + SAS_URL.encode(), ()),
    "surrogate-escaped text": ("job-42 body %s", (b"\xff sig=" .decode("utf-8", "surrogateescape") + SECRET,)),
    "too few arguments": ("job-42 upload %s failed with %d", (SAS_URL,)),
    "wrong argument type": ("job-42 attempt %d", (SAS_URL,)),
    "missing mapping key": ("job-42 %(task)s %(missing)s", ({"task": SAS_URL},)),
    "argument whose __str__ raises": ("job-42 task %s", (_Unprintable(),)),
    "argument whose __str__ and __repr__ raise": ("job-42 task %s vm %s", (_Opaque(), "vm-7")),
    "message whose __str__ raises": (_Unprintable(), ()),
    "nested protected settings": ("job-42 command %s", (
        {"settings": {"taskId": "t_1"}, "protectedSettings": {"blobs": {"sas": SAS_URL}, "key": SECRET}},)),
    "nested protected settings as text": ("job-42 command %s", (
        '{"protectedSettings": {"blobs": {"k": "' + SECRET + '"}}}',)),
}


class _StrictHandler(logging.Handler):
    """Writes through a strict UTF-8 stream, and lets an emit failure surface instead of printing it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.stream.write(self.format(record) + "\n")

    def handleError(self, record: logging.LogRecord) -> None:   # noqa: N802 - logging's name
        raise sys.exc_info()[1]

    def text(self) -> str:
        self.stream.flush()
        return self.stream.buffer.getvalue().decode("utf-8")


@pytest.fixture
def logger():
    configure_logging()
    handler = _StrictHandler()
    log = logging.getLogger("tests.faults.hostile")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    log.addHandler(handler)
    yield log, handler
    log.removeHandler(handler)


@pytest.mark.parametrize("level", LEVELS, ids=logging.getLevelName)
@pytest.mark.parametrize("case", HOSTILE, ids=str)
def test_hostile_record_is_logged_without_raising_or_leaking(logger, case, level):
    """Whatever a message holds, the log call returns, shows no SAS or key, and names its job."""
    log, handler = logger
    msg, args = HOSTILE[case]
    log.log(level, msg, *args)
    text = handler.text()
    assert logging.getLevelName(level) in text
    assert SECRET not in text
    if case != "message whose __str__ raises":
        assert "job-42" in text, text
    if isinstance(msg, str) and "vm %s" in msg:
        assert "vm-7" in text          # the printable arguments survive an unprintable one


@pytest.mark.parametrize("level", LEVELS, ids=logging.getLevelName)
def test_an_exception_that_cannot_describe_itself_is_still_logged(logger, level):
    """A traceback of an exception whose __str__ raises keeps the line and the exception's type."""
    log, handler = logger
    try:
        raise _BadError(SAS_URL)
    except _BadError:
        log.log(level, "job-42 ingest failed for %s", SAS_URL, exc_info=True)
    text = handler.text()
    assert "job-42 ingest failed" in text and "_BadError" in text and SECRET not in text


def test_a_failed_format_renders_each_argument_once():
    """An argument with side effects in __str__ (a stream, a lazy SDK value) is not rendered twice."""
    calls = []

    class Counting:
        def __str__(self) -> str:
            calls.append(1)
            return "job-42"

    configure_logging()
    record = logging.getLogger("tests.faults.count").makeRecord(
        "tests.faults.count", logging.INFO, __file__, 1, "%s and %d", (Counting(), "x"), None)
    assert calls == [1] and "%s and %d" in record.getMessage()
