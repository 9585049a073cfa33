"""A federation CA made with the CLI (``dask federation certs``), for the TLS tests: hub,
sites awi and geomar, users alice and bob, and mallory from another CA.

``make_pki`` makes one; the module-scoped ``pki`` fixture (tests/conftest.py) gives each
module its own, because tests revoke certificates.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from federation.security import init_ca, issue


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "federation.cli", *args], capture_output=True, text=True,
        timeout=90,
    )


def _creds(pki, name: str, ca: str = "ca") -> tuple[str, str, str]:
    d = pki / ca
    return str(d / "ca.pem"), str(d / f"{name}.pem"), str(d / f"{name}-key.pem")


def make_pki(root: Path) -> Path:
    """The CA in ``root/ca`` with its certificates, and another CA in ``root/other``."""
    proc = _cli("certs", "init", str(root / "ca"))
    assert proc.returncode == 0, proc.stderr
    for args in (["--hub"], ["--site", "awi"], ["--site", "geomar"], ["--user", "alice"],
                 ["--user", "bob"]):
        proc = _cli("certs", "issue", str(root / "ca"), *args)
        assert proc.returncode == 0, proc.stderr
    init_ca(root / "other")  # a CA that is not the federation's
    issue(root / "other", "user", "mallory")
    return root
