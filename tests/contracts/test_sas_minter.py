"""The SasMinter contract, on the fake and on the Blob adapter (the Azurite account): each SAS names one blob
(``sr=b``, on the blob's own URL, whatever query the input carried), grants the least each use needs (create
only for a disk: it can snapshot and nothing else; read + write for a status or log blob), and is valid from
a little before now until past the extension's window; a blob outside the account gets none. What storage
then lets each SAS do is pinned on Azurite by tests/dispatch/test_sas_azurite.py."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from shared.adapters.blob_sas import BlobSasMinter
from shared.clock import FixedClock
from shared.domain.command import EXTENSION_WINDOW
from shared.errors import PermanentError
from shared.ports import SasMinter
from tests.contracts.conftest import REAL
from tests.fakes import FakeSasMinter

PORTS = (SasMinter,)

NOW = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture(params=["fake", REAL("azurite")])
def minter(request) -> Iterator[tuple[SasMinter, str]]:
    """The minter (its clock at NOW) and its storage account's URL."""
    if request.param == "fake":
        account = "http://127.0.0.1:10000/devstoreaccount1"
        yield FakeSasMinter(account, clock=FixedClock(NOW)), account
        return
    service = request.getfixturevalue("blob_service_client")
    yield BlobSasMinter(service, clock=FixedClock(NOW)), service.url.rstrip("/")


def _sas(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


MINTS: dict[str, tuple[Callable[[SasMinter, str], str], set[str]]] = {
    "disk": (lambda m, url: m.disk_sas_url(url), {"c"}),
    "status": (lambda m, url: m.status_sas_url(url), {"r", "w"}),
    "log": (lambda m, url: m.log_sas_url(url), {"r", "w"}),
}


@pytest.mark.parametrize("use", sorted(MINTS))
def test_a_sas_grants_the_least_its_use_needs_on_that_one_blob(minter, use):
    """Whatever query the blob URL came with (an older SAS), the SAS is on the blob itself, of one blob."""
    sas_minter, account = minter
    mint, permissions = MINTS[use]
    blob = f"{account}/vhds/vm-1 os.vhd"
    url = mint(sas_minter, f"{blob}?sv=2020-01-01&sp=racwd&sig=OLD")
    sas = _sas(url)
    assert url.split("?", 1)[0] in (blob, blob.replace(" ", "%20"))
    assert (sas["sr"], set(sas["sp"])) == ("b", permissions) and sas["sig"] and "OLD" not in url


@pytest.mark.parametrize("use", sorted(MINTS))
def test_a_sas_is_valid_from_before_now_until_past_the_extension_window(minter, use):
    """A skewed clock on the VM or in storage still accepts it, and it outlives the command it travels in,
    but not by days: a leaked SAS soon stops working."""
    sas_minter, account = minter
    sas = _sas(MINTS[use][0](sas_minter, f"{account}/status/job-1/1.status.txt"))
    assert _at(sas["st"]) < NOW
    assert NOW + EXTENSION_WINDOW < _at(sas["se"]) <= NOW + timedelta(hours=6)


@pytest.mark.parametrize("use", sorted(MINTS))
def test_a_blob_outside_the_account_gets_no_sas(minter, use):
    """A VM whose disks live elsewhere fails clearly, in one line, instead of getting a SAS that cannot work."""
    sas_minter, _ = minter
    with pytest.raises(PermanentError) as refused:
        MINTS[use][0](sas_minter, "https://elsewhere.blob.core.windows.net/vhds/os.vhd")
    assert "elsewhere" in str(refused.value) and "\n" not in str(refused.value)
