"""One redaction helper: no SAS signature, key or protected setting gets past it."""
from __future__ import annotations

import logging

import pytest

from shared.redaction import RedactingFilter, redact

SAS_URL = ("https://acct.blob.core.windows.net/vhds/os.vhd?sv=2026-10-06&st=2025-03-01T01%3A45%3A00Z"
           "&se=2025-03-01T04%3A50%3A00Z&sr=b&sp=c&sig=Tywk%2BROXL1zv%3D")
SECRET = "Tywk%2BROXL1zv%3D"


@pytest.mark.parametrize("text", [
    SAS_URL,
    f"upload to {SAS_URL} failed",
    f'{{"statusBlobUri": "{SAS_URL}"}}',
    f"<Url>{SAS_URL}</Url>",
    "SharedAccessSignature=sv=2026&sig=" + SECRET + ";BlobEndpoint=x",
    "https://x/y?url=" + "https%3A%2F%2Facct%2Fos.vhd%3Fsp%3Dc%26sig%3D" + SECRET,
])
def test_signatures_are_removed_from_any_text(text):
    """A SAS in a URL, JSON, XML or a nested URL loses its signature and nothing else."""
    cleaned = redact(text)
    assert SECRET not in cleaned and "Tywk" not in cleaned
    assert "REDACTED" in cleaned


def test_everything_but_the_signature_stays_readable():
    """An operator still sees which blob, which permissions and when the SAS expires."""
    assert redact(SAS_URL) == SAS_URL.replace("sig=" + SECRET, "sig=REDACTED")


def test_storage_keys_are_removed():
    """A connection string in an error message does not leak the account key."""
    text = redact("AccountName=a;AccountKey=Eby8vdM02x==;BlobEndpoint=http://x")
    assert "Eby8" not in text and "AccountName=a" in text


def test_protected_settings_are_redacted_in_structures_and_text():
    """A protectedSettings object is hidden whole, whether it is a dict, JSON text or a repr."""
    protected = {"objectStr": "eyJibG9iU0FTVXJpIjpbXX0=", "statusBlobUri": SAS_URL}
    doc = {"properties": {"settings": {"taskId": "t_1"}, "protectedSettings": protected}}
    cleaned = redact(doc)
    assert cleaned == {"properties": {"settings": {"taskId": "t_1"}, "protectedSettings": "<redacted>"}}
    assert doc["properties"]["protectedSettings"] is protected      # the input is left alone
    for text in (str(doc), __import__("json").dumps(doc)):
        assert "eyJib" not in redact(text) and SECRET not in redact(text)
        assert "t_1" in redact(text)


def test_other_values_pass_through():
    """Numbers, None and plain words are not touched."""
    assert redact([1, None, "signature", ("a", 2.5)]) == [1, None, "signature", ("a", 2.5)]


def _record(msg, *args, exc_info=None):
    return logging.LogRecord("t", logging.ERROR, __file__, 1, msg, args, exc_info)


def test_filter_cleans_message_arguments_and_traceback():
    """A log line with a SAS in its arguments or its exception shows no signature once filtered."""
    try:
        raise RuntimeError(f"PUT {SAS_URL} failed")
    except RuntimeError:
        import sys
        record = _record("dispatch %s for %s", SAS_URL, {"protectedSettings": {"a": SECRET}},
                         exc_info=sys.exc_info())
    assert RedactingFilter().filter(record)
    text = logging.Formatter().format(record)
    assert SECRET not in text and "dispatch" in text and "RuntimeError" in text


def test_filter_on_a_handler_covers_every_logger(caplog):
    """With the filter on a handler, whatever module logs a SAS, that handler never shows it."""
    caplog.handler.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO):
        logging.getLogger("some.sdk.module").info("GET %s", SAS_URL)
        try:
            raise ValueError(SAS_URL)
        except ValueError:
            logging.getLogger("another").exception("failed")
    assert SECRET not in caplog.text and "sig=REDACTED" in caplog.text
