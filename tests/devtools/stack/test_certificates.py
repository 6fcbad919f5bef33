"""The local stack's SeaweedFS certificates: made from a secret, so two checkouts pointed at one
stack trust each other's, and nothing else is trusted."""

from __future__ import annotations

import ssl

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from devtools.stack.certificates import write_ca_and_cert

pytestmark = pytest.mark.pure


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        return True
    except InvalidSignature:
        return False


def test_two_checkouts_with_one_secret_trust_each_other_and_no_other(tmp_path):
    for name, secret in (("a", "s3cret-one"), ("b", "s3cret-one"), ("c", "another")):
        write_ca_and_cert(tmp_path / name, "feedstore-seaweedfs", secret)
    load = lambda d, f: x509.load_pem_x509_certificate((tmp_path / d / f).read_bytes())  # noqa: E731
    assert _signed_by(load("b", "weed.crt"), load("a", "ca.crt"))
    assert _signed_by(load("a", "weed.crt"), load("b", "ca.crt"))
    assert not _signed_by(load("c", "weed.crt"), load("a", "ca.crt"))
    assert (tmp_path / "a" / "weed.key").stat().st_mode & 0o077 == 0  # the key is the credential
    context = ssl.create_default_context(cafile=str(tmp_path / "a" / "ca.crt"))  # what a client loads
    context.load_cert_chain(tmp_path / "b" / "weed.crt", tmp_path / "b" / "weed.key")
