"""The VM's run log: every line a handler module logs, at every level and with its traceback, reaches
``extension.log`` and the log blob's text, with SAS signatures redacted."""
from __future__ import annotations

import logging

import pytest

from extension.runlog import capture

log = logging.getLogger("extension.enable")       # a handler module's logger, as the modules use them


@pytest.mark.parametrize("level, word", [(logging.DEBUG, "Verbose"), (logging.INFO, "Info"),
                                         (logging.WARNING, "Warning"), (logging.ERROR, "Error"),
                                         (logging.CRITICAL, "Error")])
def test_every_level_reaches_the_file_and_the_blob_text(tmp_path, level, word):
    """A line at any level is in extension.log and in the log blob's text, under the real handler's level word."""
    path = tmp_path / "extension.log"
    with capture(path) as run:
        log.log(level, "disk %s: snapshot of %s", 0, "https://a.blob/x.vhd?sv=1&sig=SECRET")
    for text in (path.read_text(), run.text()):
        (line,) = [line for line in text.splitlines() if "disk 0" in line]
        assert f"  {word}  disk 0: snapshot of https://a.blob/x.vhd?sv=1&sig=REDACTED" in line
        assert "SECRET" not in text


def test_log_exception_reaches_the_run_log_with_its_traceback(tmp_path):
    """log.exception writes its message and the exception's traceback, in the file and the blob text."""
    path = tmp_path / "extension.log"
    with capture(path) as run:
        try:
            raise OSError("freeze of /data failed: sig=SECRET")
        except OSError:
            log.exception("freeze failed; thawing")
    for text in (path.read_text(), run.text()):
        assert "  Error  freeze failed; thawing Traceback (most recent call last):" in text
        assert "OSError: freeze of /data failed: sig=REDACTED" in text
        assert "SECRET" not in text
