"""Protected settings as CMS EnvelopedData (AES-256-CBC content, RSA key transport), §2.1.

The service encrypts with the VM's certificate; the handler decrypts with the ``<thumbprint>.crt``
and ``.prv`` pair that WALA drops in ``/var/lib/waagent``. The output also decrypts with
``openssl cms -decrypt -inform DER``, which is what the real handler runs.
"""
from __future__ import annotations

import base64
import binascii
import json

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7


class ProtectedSettingsError(Exception):
    """The protected settings could not be decrypted or are not a JSON object."""


def encrypt_protected_settings(settings: dict, cert_pem: bytes) -> str:
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


def decrypt_protected_settings(b64: str, cert_pem: bytes, key_pem: bytes) -> dict:
    """Decrypt what :func:`encrypt_protected_settings` produced; raise ProtectedSettingsError."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
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
