"""Identity in a federation: a certificate authority and role certificates for mutual TLS.

``dask federation certs init DIR`` makes the federation's CA; ``certs issue DIR --hub``,
``--site NAME`` or ``--user NAME`` issues a key and certificate whose subject carries the
role (``OU``) and the name (``CN``). Hub, sites and clients then talk ``tls://`` with
distributed's :class:`~distributed.security.Security`; the hub reads the peer's
certificate to know who is registering a site, joining as a worker or submitting work.

Examples
--------
>>> ca = init_ca(tmp)                                        # doctest: +SKIP
>>> cert, key = issue(tmp, "site", "awi")                    # doctest: +SKIP
>>> sec = security(tmp / "ca.pem", cert, key)                # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from distributed.security import Security

Role = Literal["hub", "site", "user"]
ROLES: tuple[Role, ...] = ("hub", "site", "user")
CA_CERT, CA_KEY = "ca.pem", "ca-key.pem"


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # keys: owner only
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def init_ca(directory: str | os.PathLike, name: str = "dask-federation", days: int = 3650) -> Path:
    """Create the federation's certificate authority in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / CA_KEY).exists():
        raise FileExistsError(f"{directory / CA_KEY} exists; a federation has one CA")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write_key(directory / CA_KEY, key)
    (directory / CA_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return directory / CA_CERT


def issue(
    directory: str | os.PathLike,
    role: Role,
    name: str,
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
    days: int = 825,
) -> tuple[Path, Path]:
    """Issue a certificate for ``role``/``name`` signed by the CA in ``directory``.

    Returns the paths of the certificate and key (``<role>-<name>.pem`` and
    ``<role>-<name>-key.pem`` in ``directory``).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    directory = Path(directory)
    ca_key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        # every party both serves (workers listen) and connects
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path = directory / f"{role}-{name}.pem"
    key_path = directory / f"{role}-{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return cert_path, key_path


def security(
    ca_file: str | os.PathLike, cert: str | os.PathLike, key: str | os.PathLike
) -> Security:
    """distributed :class:`Security` using one certificate for every part a process plays."""
    paths = {"ca": str(ca_file), "cert": str(cert), "key": str(key)}
    for what, path in paths.items():
        if not os.path.exists(path):
            raise FileNotFoundError(f"TLS {what} file {path!r} does not exist")
    return Security(
        require_encryption=True,
        tls_ca_file=paths["ca"],
        **{f"tls_{part}_cert": paths["cert"] for part in ("client", "scheduler", "worker")},
        **{f"tls_{part}_key": paths["key"] for part in ("client", "scheduler", "worker")},
    )


def identity(peercert: dict[str, Any] | None) -> tuple[str, str] | None:
    """``(role, name)`` from a peer certificate as :meth:`ssl.SSLSocket.getpeercert`
    returns it; ``None`` for plain TCP or a certificate without a federation role."""
    if not peercert:
        return None
    fields = {k: v for rdn in peercert.get("subject", ()) for k, v in rdn}
    role, name = fields.get("organizationalUnitName"), fields.get("commonName")
    if role in ROLES and name:
        return role, name
    return None
