"""A SAS cannot leak through a blob URL: printing, logging, formatting or pickling it shows the blob only."""
from __future__ import annotations

import logging
import pickle

import pytest

from shared.domain.bloburl import BlobUrl, base_of, without_secrets
from shared.errors import ValidationError

SAS = "sv=2024-08-04&sp=c&se=2025-03-01T04%3A50Z&sig=SeCrEt%2Bsig%3D"
BLOB = "https://acct.blob.core.windows.net/disks/web-1-os.vhd"


@pytest.mark.parametrize("show", [str, repr, lambda u: f"{u}", lambda u: "%s" % u, lambda u: [u].__repr__()])
def test_no_way_of_showing_it_shows_the_sas(show):
    """However the URL is turned into text, the signature is not in it."""
    text = show(BlobUrl(f"{BLOB}?{SAS}"))
    assert "SeCrEt" not in text and "sig=" not in text and BLOB in text


def test_a_log_line_never_carries_the_sas(caplog):
    """Logging a URL the usual way (``%s``) logs the blob only."""
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("dispatching %s", BlobUrl(f"{BLOB}?{SAS}"))
    assert "SeCrEt" not in caplog.text and BLOB in caplog.text


def test_the_full_url_is_one_explicit_call_away():
    """The extension still gets the SAS, through ``with_sas()`` and nothing else."""
    url = BlobUrl(f"{BLOB}?{SAS}")
    assert url.with_sas() == f"{BLOB}?{SAS}" and url.has_sas and url.base == BLOB


def test_a_snapshot_stays_part_of_the_url():
    """A snapshot's timestamp is what the URL names, so it is kept; the signature next to it is not."""
    url = BlobUrl(f"{BLOB}?snapshot=2025-03-01T02:03:40.1234567Z&{SAS}")
    assert url.stored == f"{BLOB}?snapshot=2025-03-01T02:03:40.1234567Z"
    assert without_secrets(url.with_sas()) == url.stored and base_of(url.with_sas()) == BLOB


def test_pickling_keeps_only_what_may_be_stored():
    """A URL that travels through pickle (a queue, a cache) arrives without its SAS."""
    assert pickle.loads(pickle.dumps(BlobUrl(f"{BLOB}?{SAS}"))).with_sas() == BLOB


def test_what_is_not_a_blob_url_is_refused():
    """A path or an empty value is a clear ValidationError, not a URL without a host."""
    with pytest.raises(ValidationError):
        BlobUrl("disks/web-1-os.vhd")
