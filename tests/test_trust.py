"""Mutual TLS identities and grants, against real hub and site processes."""

from __future__ import annotations

import pytest

from federation.security import security

from .conftest import make_site
from .pki import _cli, _creds


@pytest.fixture(scope="module")
def tls_federation(federations):
    """TLS hub, awi and geomar; alice may use awi (``tests/federations.py``: ``tls``)."""
    return federations.get("tls")


@pytest.fixture(scope="module")
def pki(tls_federation):
    """That federation's CA (it has its own: this module's certificates must match it)."""
    return tls_federation.pki


def test_user_with_certificate_and_grant_computes(tls_federation, pki):
    assert tls_federation.address.startswith("tls://")
    with tls_federation.connect(security=security(*_creds(pki, "user-alice"))) as fed:
        # the catalog shows what alice may use
        assert list(fed.catalog()["dataset"]) == ["awi/sst"]
        assert float(fed.open_dataset("awi/sst").sst.mean().compute()) > 0


def test_user_without_grant_is_refused_before_anything_runs(tls_federation, pki):
    with tls_federation.connect(security=security(*_creds(pki, "user-alice"))) as fed:
        with pytest.raises(PermissionError, match="no grant for 'geomar/chl'"):
            fed.open_dataset("geomar/chl")
        # a graph built without asking the catalog is refused at the hub, nothing runs
        from federation.lazy import build_dataset

        with tls_federation.connect(security=security(*_creds(pki, "user-bob"))) as bob:
            info = bob.info  # bob has no grants at all
            with pytest.raises(PermissionError, match="user 'bob' has no grant for"):
                info("awi/sst")
        chl_info = _info_as_site(tls_federation, pki, "geomar/chl")
        with fed.traffic() as t:
            with pytest.raises(PermissionError, match="user 'alice' has no grant for 'geomar/chl'"):
                build_dataset(chl_info).chl.mean().compute()
        assert t.total == 0 and t.tasks == {}


def _info_as_site(lf, pki, ref):
    """Catalog metadata fetched with a site's certificate (sites see everything here)."""
    with lf.connect(security=security(*_creds(pki, "site-awi"))) as fed:
        return fed.info(ref)


def test_client_without_certificate_cannot_connect(tls_federation, pki):
    import socket
    import ssl

    # a TLS client that trusts the federation's CA but shows no certificate of its own:
    # the hub ends the handshake (distributed's own client will not even try without one)
    ctx = ssl.create_default_context(cafile=str(pki / "ca" / "ca.pem"))
    ctx.check_hostname = False
    port = int(tls_federation.address.rsplit(":", 1)[1])
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw) as tls:
                tls.sendall(b"\x00" * 8)
                if tls.recv(16) == b"":
                    raise ConnectionError("closed by the hub")
    # and plain TCP does not get through either
    plain = tls_federation.address.replace("tls://", "tcp://")
    from federation import connect

    with pytest.raises((OSError, TimeoutError)):
        connect(plain, timeout="3s")


def test_certificate_from_another_ca_is_rejected(tls_federation, pki):
    ca = str(pki / "ca" / "ca.pem")  # trusts the federation CA, but holds mallory's cert
    _, cert, key = _creds(pki, "user-mallory", ca="other")
    with pytest.raises((OSError, TimeoutError)):
        tls_federation.connect(security=security(ca, cert, key), timeout="3s")


def test_site_certificate_cannot_register_another_site(tls_federation, pki, tmp_path):
    cfg = make_site(tmp_path, "dkrz", "t2m", "t2m.nc", size=5 * 180 * 360 * 4)
    ca, cert, key = _creds(pki, "site-awi")  # awi's certificate, dkrz's config
    proc = _cli("site", str(cfg), "--hub", tls_federation.address,
                "--tls-ca-file", ca, "--tls-cert", cert, "--tls-key", key)
    assert proc.returncode == 2
    assert "the certificate of site 'awi' cannot register site 'dkrz'" in proc.stderr
