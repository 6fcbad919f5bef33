"""A private certificate authority and one certificate it signs, for servers of the local stack
that authenticate their clients by certificate (SeaweedFS's master, volume and filer).

Both keys derive from a secret of the settings, as the other stores' passwords are settings: every
worktree pointed at one stack makes certificates the same CA key signs, so each one's ``weed shell``
is let in by a server another started, with nothing to copy between them."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOT_BEFORE = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
NOT_AFTER = datetime.datetime(2099, 12, 31, tzinfo=datetime.timezone.utc)
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _derived(secret: str, purpose: str) -> int:
    return int.from_bytes(hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).digest(), "big")


def _key(secret: str, purpose: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(_derived(secret, purpose) % (_P256_ORDER - 1) + 1, ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: x509.Name, public_key, serial: int) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer).public_key(public_key)
            .serial_number(serial).not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER))


def write_ca_and_cert(directory: Path, common_name: str, secret: str) -> None:
    """``ca.crt``, and ``weed.crt``/``weed.key`` for both ends (server and client auth, 127.0.0.1 and
    localhost), all from ``secret``; the CA key is not written."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    ca_key = _key(secret, "ca")
    ca = (_builder(f"{common_name}-ca", _name(f"{common_name}-ca"), ca_key.public_key(),
                   _derived(secret, "ca-serial") >> 100)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = _key(secret, "cert")
    cert = (_builder(common_name, ca.subject, key.public_key(), _derived(secret, "cert-serial") >> 100)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    key_file = directory / "weed.key"
    key_file.touch(mode=0o600)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    (directory / "weed.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))  # last: marks the set complete
