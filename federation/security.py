"""Identity in a federation: a certificate authority and role certificates for mutual TLS.

``dask federation certs init DIR`` makes the federation's CA; ``certs issue DIR --hub``,
``--site NAME`` or ``--user NAME`` issues a key and certificate whose subject carries the
role (``OU``) and the name (``CN``). Hub, sites and clients then talk ``tls://`` with
distributed's :class:`~distributed.security.Security`; the hub reads the peer's
certificate to know who is registering a site, joining as a worker or submitting work.

Every certificate issued is listed in ``DIR/issued.jsonl``; ``certs revoke`` adds all
certificates of an identity to ``DIR/crl.pem``, an X.509 revocation list signed by the
CA, which the hub reloads when it changes (see :mod:`federation.revocation`). User
certificates last 90 days by default (``certs renew`` issues a fresh one).

Examples
--------
>>> ca = init_ca(tmp)                                        # doctest: +SKIP
>>> cert, key = issue(tmp, "site", "awi")                    # doctest: +SKIP
>>> sec = security(tmp / "ca.pem", cert, key)                # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
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
CRL, ISSUED = "crl.pem", "issued.jsonl"
#: default lifetimes in days: people change institutes more often than services move
LIFETIME: dict[str, int] = {"hub": 825, "site": 825, "user": 90}
#: the names certificates are issued for
CERT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")


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
    days: int | None = None,
) -> tuple[Path, Path]:
    """Issue a certificate for ``role``/``name`` signed by the CA in ``directory``,
    valid for ``days`` (default :data:`LIFETIME` of the role).

    Returns the paths of the certificate and key (``<role>-<name>.pem`` and
    ``<role>-<name>-key.pem`` in ``directory``); a second issue for the same identity
    (a renewal) replaces those files, the earlier certificate stays valid until it
    expires or is revoked.
    """
    days = LIFETIME.get(role, 90) if days is None else days
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    if not CERT_NAME.match(name):
        # the name becomes a file name here and a grants key at the hub ("site:awi" …)
        raise ValueError(
            f"{role} name {name!r} is not allowed: use letters, digits and '_', '-', '.', "
            "'@', starting with a letter or digit (no ':' or '/')"
        )
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
    with open(directory / ISSUED, "a") as index:
        index.write(json.dumps({
            "serial": format(cert.serial_number, "x"), "role": role, "name": name,
            "not_after": cert.not_valid_after_utc.isoformat(),
        }) + "\n")
    return cert_path, key_path


def issued(directory: str | os.PathLike, role: str, name: str) -> set[int]:
    """Serial numbers of every certificate issued in ``directory`` for ``role``/``name``
    (from ``issued.jsonl``, and the current ``<role>-<name>.pem``)."""
    directory = Path(directory)
    serials = set()
    if (directory / ISSUED).exists():
        for line in (directory / ISSUED).read_text().splitlines():
            entry = json.loads(line)
            if (entry["role"], entry["name"]) == (role, name):
                serials.add(int(entry["serial"], 16))
    current = directory / f"{role}-{name}.pem"
    if current.exists():  # issued before the index existed
        serials.add(x509.load_pem_x509_certificate(current.read_bytes()).serial_number)
    return serials


def revoke(directory: str | os.PathLike, serials: set[int]) -> Path:
    """Add ``serials`` to the CA's revocation list ``crl.pem`` (created if missing).

    Raises :class:`ValueError` for an empty set: revoking nothing is a mistake
    (an identity never issued here, or a typo).
    """
    if not serials:
        raise ValueError("no certificate to revoke")
    directory = Path(directory)
    ca_key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
    now = datetime.datetime.now(datetime.timezone.utc)
    entries = {}
    if (directory / CRL).exists():
        old = x509.load_pem_x509_crl((directory / CRL).read_bytes())
        entries = {e.serial_number: e for e in old}
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        # the hub reads the list as long as it is signed by the CA; next_update only
        # tells other X.509 tools when to look again
        .next_update(now + datetime.timedelta(days=30))
    )
    for serial in sorted(set(entries) | serials):
        entry = entries.get(serial) or (
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(ca_key, hashes.SHA256())
    tmp = directory / f".{CRL}.tmp"
    tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, directory / CRL)  # the hub never reads half a list
    return directory / CRL


def revoked_serials(crl_file: str | os.PathLike, ca_file: str | os.PathLike) -> frozenset[int]:
    """Serial numbers in a revocation list, after checking the CA signed it.

    Raises :class:`ValueError` if the file is not a CRL or not signed by the CA.
    """
    crl = x509.load_pem_x509_crl(Path(crl_file).read_bytes())
    ca = x509.load_pem_x509_certificate(Path(ca_file).read_bytes())
    if crl.issuer != ca.subject or not crl.is_signature_valid(ca.public_key()):
        raise ValueError(f"{crl_file} is not signed by the federation CA {ca_file}")
    return frozenset(e.serial_number for e in crl)


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


def serial(peercert: dict[str, Any] | None) -> int | None:
    """The serial number of a peer certificate (``None`` for plain TCP)."""
    if not peercert or "serialNumber" not in peercert:
        return None
    return int(peercert["serialNumber"], 16)
