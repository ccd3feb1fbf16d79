"""A certificate authority per cluster, and a certificate per node and client.

Every connection in a cluster is mutual TLS: a node or client proves it
belongs by holding a certificate signed by the cluster's own CA, which exists
nowhere else. Keys are ECDSA P-256, which is fast to generate (so issuing
one per worker costs well under a millisecond) and small enough for user-data.
Private keys are written only with mode 0600 and never logged.
"""

from __future__ import annotations

import datetime
import os
import pathlib
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from distributed.security import Security

__all__ = ["CertificateAuthority", "KeyPair"]

# Certificates outlive any sane cluster lifetime; the CA key dies with the cluster.
_VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class KeyPair:
    cert: str
    key: str = field(repr=False)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class CertificateAuthority:
    """The cluster's own CA. Create it once, then ``issue`` a pair per node."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate):
        self._key = key
        self._cert = cert

    def __repr__(self) -> str:
        return f"<CertificateAuthority {self._cert.subject.rfc4514_string()}>"

    @classmethod
    def create(cls, cluster_id: str) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"dask-rawcloud CA {cluster_id}"))
            .issuer_name(_name(f"dask-rawcloud CA {cluster_id}"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @property
    def cert_pem(self) -> str:
        return _cert_pem(self._cert)

    def issue(self, common_name: str) -> KeyPair:
        """A new key and a certificate for it, signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        return KeyPair(cert=_cert_pem(cert), key=_key_pem(key))

    def client_security(self) -> Security:
        """A distributed ``Security`` for a client of this cluster."""
        return security_from(self.cert_pem, self.issue("client"))

    def save(self, directory: pathlib.Path) -> None:
        """Keep the CA so another process (``dask-rawcloud connect``) can issue client pairs."""
        directory.mkdir(parents=True, exist_ok=True)
        write_private(directory / "ca.key", _key_pem(self._key))
        (directory / "ca.crt").write_text(self.cert_pem)

    @classmethod
    def load(cls, directory: pathlib.Path) -> CertificateAuthority:
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
        cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(key, cert)


def security_from(ca_pem: str, pair: KeyPair) -> Security:
    """Mutual TLS for every role, from in-memory PEM text."""
    return Security(
        require_encryption=True,
        tls_ca_file=ca_pem,
        tls_client_cert=pair.cert,
        tls_client_key=pair.key,
        tls_scheduler_cert=pair.cert,
        tls_scheduler_key=pair.key,
        tls_worker_cert=pair.cert,
        tls_worker_key=pair.key,
    )


def write_private(path: pathlib.Path, text: str) -> None:
    """Write a secret so that it is never readable by others, not even briefly."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
