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


def _certs(*args: str) -> None:
    """``dask federation certs ARGS``, run in this process (click's test runner): the
    CLI's own code, without a Python start-up per certificate."""
    from click.testing import CliRunner

    from federation.cli import main

    result = CliRunner().invoke(main, ["certs", *args])
    assert result.exit_code == 0, (result.output, result.exc_info)


def make_pki(root: Path) -> Path:
    """The CA in ``root/ca`` with its certificates, and another CA in ``root/other``."""
    _certs("init", str(root / "ca"))
    for args in (["--hub"], ["--site", "awi"], ["--site", "geomar"], ["--user", "alice"],
                 ["--user", "bob"]):
        _certs("issue", str(root / "ca"), *args)
    init_ca(root / "other")  # a CA that is not the federation's
    issue(root / "other", "user", "mallory")
    return root
