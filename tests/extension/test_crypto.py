"""Encrypted protected settings: the service's encrypt half and the handler's decrypt half agree."""
from __future__ import annotations

import base64
import shutil
import subprocess

import pytest

from extension.crypto import (
    ProtectedSettingsError,
    certificate_thumbprint,
    decrypt_protected_settings,
    encrypt_protected_settings,
    ensure_transport_certificate,
    new_certificate,
)
from extension.handler import run_daemon
from tests.extension.conftest import health


def _cert_pair(common_name: str = "vm-transport") -> tuple[bytes, bytes]:
    """A throwaway self-signed RSA certificate and key, PEM (what WALA drops as .crt/.prv)."""
    return new_certificate(common_name, days=1)


@pytest.fixture(scope="module")
def cert_pair():
    return _cert_pair()


def test_protected_settings_survive_an_encrypt_decrypt_round_trip(cert_pair):
    """What the service encrypts to the VM's certificate, the handler decrypts unchanged."""
    cert_pem, key_pem = cert_pair
    settings = {"objectStr": "eyJ9", "statusBlobUri": "https://a/b?sig=x"}

    sealed = encrypt_protected_settings(settings, cert_pem)

    assert "sig=x" not in base64.b64decode(sealed).decode("latin-1")
    assert decrypt_protected_settings(sealed, cert_pem, key_pem) == settings


def test_another_vms_key_cannot_decrypt(cert_pair):
    """Settings sealed for one VM do not open with another VM's key."""
    sealed = encrypt_protected_settings({"a": 1}, cert_pair[0])
    other_cert, other_key = _cert_pair("other-vm")

    with pytest.raises(ProtectedSettingsError):
        decrypt_protected_settings(sealed, other_cert, other_key)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl CLI")
def test_the_real_handlers_openssl_cms_decrypts_what_the_service_encrypts(cert_pair, tmp_path):
    """The real handler pipes the settings through ``openssl cms -decrypt``: that works too."""
    cert_pem, key_pem = cert_pair
    (tmp_path / "t.crt").write_bytes(cert_pem)
    (tmp_path / "t.prv").write_bytes(key_pem)
    (tmp_path / "s.der").write_bytes(base64.b64decode(encrypt_protected_settings({"k": "v"}, cert_pem)))

    done = subprocess.run(
        ["openssl", "cms", "-decrypt", "-inform", "DER", "-in", str(tmp_path / "s.der"),
         "-recip", str(tmp_path / "t.crt"), "-inkey", str(tmp_path / "t.prv")],
        capture_output=True, check=True,
    )

    assert done.stdout == b'{"k": "v"}'


def _install_cert(cert_pem: bytes, key_pem: bytes, waagent_dir) -> str:
    thumbprint = certificate_thumbprint(cert_pem)
    waagent_dir.mkdir(exist_ok=True)
    (waagent_dir / f"{thumbprint}.crt").write_bytes(cert_pem)
    (waagent_dir / f"{thumbprint}.prv").write_bytes(key_pem)
    return thumbprint


def test_a_backup_with_encrypted_protected_settings_succeeds(vm, cert_pair, tmp_path):
    """With the VM's cert in /var/lib/waagent, encrypted settings back up like clear ones."""
    thumbprint = _install_cert(*cert_pair, tmp_path / "waagent")
    public, protected = vm.settings()
    vm.write(0, public, encrypt_protected_settings(protected, cert_pair[0]), thumbprint)

    element = run_daemon(vm.root, 0, clock=vm.clock, plugin_config_path=vm.etc / "absent.json")

    assert element["status"]["code"] == "1"
    assert len(vm.snapshots("os.vhd")) == 1


def test_undecryptable_settings_fall_back_to_no_protected_settings(vm, cert_pair, tmp_path):
    """A wrong certificate leaves no SAS: status goes to the public status URI, code 76."""
    other_cert, other_key = _cert_pair("not-this-vm")
    thumbprint = _install_cert(other_cert, other_key, tmp_path / "waagent")
    public, protected = vm.settings()
    public["statusBlobUri"] = protected["statusBlobUri"]
    vm.write(0, public, encrypt_protected_settings(protected, cert_pair[0]), thumbprint)

    element = run_daemon(vm.root, 0, clock=vm.clock, plugin_config_path=vm.etc / "absent.json")

    assert (element["status"]["code"], health(element)) == ("76", (256, 76))
    assert vm.status_blob() == element


def test_no_settings_at_all_is_a_certificate_error(vm, tmp_path):
    """Nothing decryptable and empty public settings: 16, "unable to load certificate"."""
    thumbprint = _install_cert(*_cert_pair(), tmp_path / "waagent")
    vm.write(0, {}, "bm90IGNtcw==", thumbprint)

    element = run_daemon(vm.root, 0, clock=vm.clock)

    # No vmType either, so, exactly like the real handler, nothing can be reported.
    assert element == {}
    assert "unable to load certificate" in (vm.root / "log" / "extension.log").read_text()


def test_a_vms_transport_certificate_is_made_once_with_a_private_key(tmp_path):
    """The simulated guest agent makes one key pair per VM, keeps it, and keeps its key private."""
    folder = tmp_path / "waagent"
    thumbprint, cert_pem = ensure_transport_certificate(folder, "vm1")
    assert ensure_transport_certificate(folder, "vm1") == (thumbprint, cert_pem)
    assert sorted(p.name for p in folder.iterdir()) == [f"{thumbprint}.crt", f"{thumbprint}.prv"]
    assert (folder / f"{thumbprint}.prv").stat().st_mode & 0o077 == 0
    sealed = encrypt_protected_settings({"k": "v"}, cert_pem)
    assert decrypt_protected_settings(sealed, cert_pem, (folder / f"{thumbprint}.prv").read_bytes()) == {"k": "v"}
