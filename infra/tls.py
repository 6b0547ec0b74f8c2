"""A throwaway certificate authority for local secured stacks (tests, staging): a CA, a server
certificate for 127.0.0.1 and localhost, and client certificates (mTLS), written as PEM files.

Generated at run time into the state directory; nothing secret is ever committed. Keys are
unencrypted PKCS#8, which Kafka's PEM keystore (KIP-651), Redis and both Python clients read.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALID_FOR = datetime.timedelta(days=30)


@dataclass(frozen=True)
class CertPair:
    """A certificate and its key, as PEM files; `bundle` holds the key and the certificate."""

    certificate: Path
    key: Path
    bundle: Path


@dataclass(frozen=True)
class LocalCA:
    ca_certificate: Path
    server: CertPair
    clients: dict[str, CertPair]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _builder(
    subject: str, issuer: x509.Name, public: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALID_FOR)
    )


def _write_pair(
    folder: Path, name: str, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> CertPair:
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    pair = CertPair(folder / f"{name}.crt", folder / f"{name}.key", folder / f"{name}.pem")
    pair.certificate.write_bytes(cert_pem)
    pair.key.write_bytes(_key_pem(key))
    pair.bundle.write_bytes(_key_pem(key) + cert_pem)
    for path in (pair.key, pair.bundle):
        path.chmod(0o600)
    return pair


def create_local_ca(folder: Path, clients: tuple[str, ...] = ("client",)) -> LocalCA:
    """A CA, a server certificate (127.0.0.1, localhost) and one client certificate per name."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("recstream local CA")
    ca = (
        _builder("recstream local CA", ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = folder / "ca.crt"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def issue(
        common_name: str, usage: x509.ObjectIdentifier, server: bool
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = _builder(common_name, ca_name, key.public_key()).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        if server:
            names: list[x509.GeneralName] = [
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    server = _write_pair(
        folder, "server", *issue("localhost", ExtendedKeyUsageOID.SERVER_AUTH, True)
    )
    issued = {
        name: _write_pair(folder, name, *issue(name, ExtendedKeyUsageOID.CLIENT_AUTH, False))
        for name in clients
    }
    return LocalCA(ca_path, server, issued)
