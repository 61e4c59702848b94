"""Protected settings as CMS EnvelopedData (AES-256-CBC content, RSA key transport).

The service encrypts with the VM's certificate; the handler decrypts with the ``<thumbprint>.crt``
and ``.prv`` pair that WALA drops in ``/var/lib/waagent``. The output also decrypts with
``openssl cms -decrypt -inform DER``, which is what the real handler runs.

:func:`ensure_transport_certificate` is the guest agent's part for a VM simulated on this machine:
it makes the VM's key pair once, and only the certificate (public) is what a dispatcher reads.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7


class ProtectedSettingsError(Exception):
    """The protected settings could not be decrypted or are not a JSON object."""


def encrypt_protected_settings(settings: dict[str, Any], cert_pem: bytes) -> str:
    """Encrypt ``settings`` (JSON) to ``cert_pem``'s RSA key; base64 of DER CMS EnvelopedData."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    der = (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(json.dumps(settings).encode("utf-8"))
        .add_recipient(cert)
        .set_content_encryption_algorithm(algorithms.AES256)
        .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )
    return base64.b64encode(der).decode("ascii")


def decrypt_protected_settings(b64: str, cert_pem: bytes, key_pem: bytes) -> dict[str, Any]:
    """Decrypt what :func:`encrypt_protected_settings` produced; raise ProtectedSettingsError."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        # The VM's own key, made by its agent and readable by its owner only: the RSA consistency
        # check the cryptography package runs on loading (tens of ms of CPU, on every command) is
        # for keys from elsewhere, which this never loads.
        key = serialization.load_pem_private_key(key_pem, password=None, unsafe_skip_rsa_key_validation=True)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise TypeError("the VM's key is not an RSA key (CMS key transport needs one)")
        der = base64.b64decode(b64, validate=False)
        plain = pkcs7.pkcs7_decrypt_der(der, cert, key, [])
        settings = json.loads(plain)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ProtectedSettingsError(f"cannot decrypt the protected settings: {exc}") from exc
    if not isinstance(settings, dict):
        raise ProtectedSettingsError("the protected settings are not a JSON object")
    return settings


def certificate_thumbprint(cert_pem: bytes) -> str:
    """The SHA-1 thumbprint WALA names the ``.crt``/``.prv`` files after (upper-case hex)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.fingerprint(hashes.SHA1()).hex().upper()


def new_certificate(common_name: str, *, days: int = 365) -> tuple[bytes, bytes]:
    """A self-signed RSA-2048 certificate and its unencrypted PKCS#8 key, both PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def ensure_transport_certificate(folder: Path, common_name: str) -> tuple[str, bytes]:
    """The VM's certificate in ``folder`` as ``(thumbprint, cert PEM)``, made once like WALA's.

    An existing ``<thumbprint>.crt`` with its ``.prv`` beside it is reused; otherwise a new pair
    is written, the key readable by its owner only. Callers serialise calls per folder.
    """
    folder = Path(folder)
    for crt in sorted(folder.glob("*.crt")):
        if crt.with_suffix(".prv").is_file():
            cert_pem = crt.read_bytes()
            return certificate_thumbprint(cert_pem), cert_pem
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    cert_pem, key_pem = new_certificate(common_name)
    thumbprint = certificate_thumbprint(cert_pem)
    fd = os.open(folder / f"{thumbprint}.prv", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_pem)
    # The .crt last: a .crt is only ever seen with its key already written.
    (folder / f"{thumbprint}.crt").write_bytes(cert_pem)
    return thumbprint, cert_pem
