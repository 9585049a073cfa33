"""Outbound-only sites behind a real firewall: their own network namespace.

awi runs in the network namespace ``fedt-awi``, joined to the host by one veth pair
(host 10.78.0.1, awi 10.78.0.2). Its workers listen on the namespace's own loopback,
which no process outside can reach: any direct inbound connection fails. The hub and
geomar (a direct site) run in the host namespace; everything between them and awi goes
through connections awi opens to the hub's relay.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
import urllib.request

import numpy as np
import pytest
import xarray as xr

from federation import protocol
from federation.local import LocalFederation
from federation.relay import parse
from federation.security import init_ca, issue, security

from .conftest import AWI_METHODS, AWI_TOOLS, make_site, open_local
from .wait import wait

NS = "fedt-awi"
HOST_IP, SITE_IP = "10.78.0.1", "10.78.0.2"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def _namespaces_usable() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    try:
        probe = _ip("netns", "add", "fedt-probe", check=False)
    except FileNotFoundError:
        return "needs the 'ip' tool (iproute2)"
    if probe.returncode:
        return f"cannot create network namespaces: {probe.stderr.strip()}"
    _ip("netns", "del", "fedt-probe", check=False)
    return None


@pytest.fixture(scope="module")
def firewall():
    """The namespace ``fedt-awi``: reachable outwards through 10.78.0.1, nothing inwards."""
    reason = _namespaces_usable()
    if reason:
        pytest.skip(reason)
    _ip("netns", "del", NS, check=False)
    _ip("link", "del", "fedt-h", check=False)
    _ip("netns", "add", NS)
    try:
        _ip("link", "add", "fedt-h", "type", "veth", "peer", "name", "fedt-s")
        _ip("link", "set", "fedt-s", "netns", NS)
        _ip("addr", "add", f"{HOST_IP}/30", "dev", "fedt-h")
        _ip("link", "set", "fedt-h", "up")
        for cmd in (["addr", "add", f"{SITE_IP}/30", "dev", "fedt-s"],
                    ["link", "set", "fedt-s", "up"], ["link", "set", "lo", "up"]):
            _ip("netns", "exec", NS, "ip", *cmd)
        yield ("ip", "netns", "exec", NS)
    finally:
        _ip("link", "del", "fedt-h", check=False)
        _ip("netns", "del", NS, check=False)


def _sites(root, geomar: dict):
    awi = make_site(root, "awi", "sst", "sst.zarr", tools=AWI_TOOLS, workers=2,
                    connectivity="outbound-only", **AWI_METHODS)
    return awi, make_site(root, "geomar", "chl", "chl.zarr", **geomar)


@pytest.fixture(scope="module")
def relayed(firewall, tmp_path_factory):
    """Hub + awi (outbound-only, firewalled) + geomar (direct): a mixed federation."""
    root = tmp_path_factory.mktemp("relay")
    awi, geomar = _sites(root, {"connectivity": "direct"})
    with LocalFederation(root / "logs", host=HOST_IP) as lf:
        lf.start_site(awi, wrapper=firewall)
        lf.start_site(geomar)
        lf.root = root
        with lf.connect() as fed:
            lf.fed = fed
            yield lf


def _awi_workers(fed) -> list[str]:
    return [a for a in fed.client.scheduler_info(n_workers=-1)["workers"]
            if a.startswith("relay://") and "/awi/" in a]


def _corr(fed) -> float:
    s = fed.open_dataset("awi/sst").sst.mean(["lat", "lon"])
    c = fed.open_dataset("geomar/chl").chl.mean(["lat", "lon"])
    # this module holds two clients: name the one to use, not the default one
    return float(fed.client.compute(xr.corr(s, c, dim="time")).result())


def _reference_corr(root) -> float:
    s = open_local(root / "awi" / "sst.zarr").sst.mean(["lat", "lon"])
    c = open_local(root / "geomar" / "chl.zarr").chl.mean(["lat", "lon"])
    return float(xr.corr(s, c, dim="time").compute(scheduler="sync"))


def test_firewall_is_real(relayed):
    """No process outside the namespace can open a connection to awi's workers."""
    workers = _awi_workers(relayed.fed)
    assert len(workers) == 2
    for address in workers:
        _, site, endpoint = parse(address.removeprefix("relay://"))
        host, port = endpoint.rsplit(":", 1)
        with pytest.raises(OSError):
            socket.create_connection((host, int(port)), timeout=2).close()


def _scaled(fed):
    """geomar's 5-day mean map goes to awi's method, the result to the client: one
    transfer each, so the bytes are deterministic (a correlation's partial sums cross
    in a number of pieces that depends on timing)."""
    chl = fed.open_dataset("geomar/chl").chl.isel(time=slice(0, 5)).mean("time")
    return fed.client.compute(fed.method("awi/scale")(chl, factor=2.0)).result()


def _pairs(record) -> dict[tuple[str, str], tuple[int, int]]:
    return {(r.source, r.destination): (r.bytes, r.nbytes) for r in record.bytes.itertuples()}


def test_two_site_correlation_and_accounting_match_direct(relayed, fed):
    """Right answers, and the same cross-border bytes as the direct federation (``fed``,
    the session's sites, same data) — plus what the relay carried."""
    with relayed.fed.traffic() as corr_traffic:
        value = _corr(relayed.fed)
    assert value == pytest.approx(_reference_corr(relayed.root), rel=1e-5)
    assert _corr(fed) == pytest.approx(value, rel=1e-5)
    assert corr_traffic.total > 0

    with relayed.fed.traffic() as relayed_traffic:
        relayed_result = _scaled(relayed.fed)
    with fed.traffic() as direct_traffic:
        direct_result = _scaled(fed)
    np.testing.assert_allclose(relayed_result.values, direct_result.values)
    relayed_pairs, direct_pairs = _pairs(relayed_traffic), _pairs(direct_traffic)
    assert set(relayed_pairs) == set(direct_pairs) == {("geomar", "awi"), ("awi", "client")}
    for pair, (wire, nbytes) in relayed_pairs.items():
        assert nbytes == direct_pairs[pair][1]
        assert wire == pytest.approx(direct_pairs[pair][0], rel=0.01)

    awi = relayed.fed.sites()["awi"]
    assert awi["connectivity"] == "outbound-only"
    assert relayed.fed.sites()["geomar"]["connectivity"] == "direct"
    # every byte awi's workers sent (counted at the worker) went through the relay
    sent_by_awi = sum(
        wire for (src, _), (wire, _) in _pairs(corr_traffic).items() if src == "awi"
    ) + relayed_pairs[("awi", "client")][0]
    assert awi["relayed_bytes"] >= sent_by_awi > 0


def test_http_api_shows_connectivity_and_relayed_bytes(relayed):
    _corr(relayed.fed)
    base = relayed.dashboard_url.removesuffix("/status")
    with urllib.request.urlopen(f"{base}/federation/api/v1/sites", timeout=30) as r:
        sites = {s["name"]: s for s in json.load(r)["sites"]}
    assert sites["awi"]["connectivity"] == "outbound-only"
    assert sites["awi"]["relayed_bytes"] > 0
    assert sites["geomar"]["connectivity"] == "direct"


def test_method_call_and_client_gather_through_relay(relayed):
    fed = relayed.fed
    assert fed.call("awi/echo", 41).result() == 41
    # raw data to the client
    first = fed.client.compute(fed.open_dataset("awi/sst").sst.isel(time=0)).result()
    expected = open_local(relayed.root / "awi" / "sst.zarr").sst.isel(time=0)
    expected = expected.compute(scheduler="sync").values
    np.testing.assert_array_equal(first.values, expected)
    # a method at awi fed with geomar's data: geomar's worker → relay → awi's worker
    chl = fed.open_dataset("geomar/chl").chl.isel(time=slice(0, 5)).mean("time")
    scaled = fed.client.compute(fed.method("awi/scale")(chl, factor=3.0)).result()
    expected = fed.client.compute(chl).result().values * 3.0
    np.testing.assert_allclose(scaled.values, expected, rtol=1e-6)


def test_cut_relay_connections_mid_computation_recover(relayed):
    fed = relayed.fed
    sst = fed.open_dataset("awi/sst").sst
    clim = sst.groupby("time.month").mean()
    future = fed.client.compute(
        [(sst - clim.sel(month=1)).mean(["lat", "lon"]), fed.open_dataset("geomar/chl").chl.max()]
    )
    time.sleep(0.5)
    cut = fed.client.sync(protocol.call, fed.client.scheduler, protocol.RELAY_RESET, site="awi")
    assert cut["cut"] >= 2  # at least the two workers' control connections
    anomaly, chl_max = fed.client.gather(future)
    local = open_local(relayed.root / "awi" / "sst.zarr").sst
    expected = (local - local.groupby("time.month").mean().sel(month=1)).mean(["lat", "lon"])
    np.testing.assert_allclose(anomaly.values, expected.compute(scheduler="sync").values,
                               rtol=1e-5)
    assert float(chl_max) > 0
    # the listeners registered again, and the next computation runs through the relay
    wait(lambda: fed.call("awi/echo", 7).result(timeout=30) == 7, 30, "awi/echo via the relay")
    assert _corr(fed) == pytest.approx(_reference_corr(relayed.root), rel=1e-5)


@pytest.fixture(scope="module")
def tls_relayed(firewall, tmp_path_factory):
    """The same firewall, with mutual TLS: relayed connections carry end-to-end TLS.
    Both sites are outbound-only (geomar by the hub's default)."""
    root = tmp_path_factory.mktemp("relay-tls")
    ca = root / "ca"
    init_ca(ca)
    for role, name in (("hub", "hub"), ("site", "awi"), ("site", "geomar"), ("user", "alice")):
        issue(ca, role, name)

    def creds(name):
        return str(ca / "ca.pem"), str(ca / f"{name}.pem"), str(ca / f"{name}-key.pem")

    # geomar's config does not say: the hub makes outbound-only the default
    awi, geomar = _sites(root, {})
    hub_yaml = root / "hub.yaml"
    hub_yaml.write_text("connectivity: outbound-only\n")
    with LocalFederation(root / "logs", dashboard=False, host=HOST_IP, tls=creds("hub-hub"),
                         hub_args=("--config", str(hub_yaml))) as lf:
        for cfg, name, wrapper in ((awi, "awi", firewall), (geomar, "geomar", ())):
            tls = dict(zip(("--tls-ca-file", "--tls-cert", "--tls-key"), creds(f"site-{name}")))
            lf.start_site(cfg, *[x for kv in tls.items() for x in kv], wrapper=wrapper)
        lf.root = root
        with lf.connect(security=security(*creds("user-alice"))) as fed:
            lf.fed = fed
            yield lf


def test_tls_end_to_end_through_relay(tls_relayed):
    fed = tls_relayed.fed
    assert fed.client.scheduler.address.startswith("tls://")
    assert _corr(fed) == pytest.approx(_reference_corr(tls_relayed.root), rel=1e-5)
    sites = fed.sites()
    assert {sites[s]["connectivity"] for s in ("awi", "geomar")} == {"outbound-only"}
    assert sites["awi"]["relayed_bytes"] > 0


def test_relay_accepts_a_sites_endpoints_only_from_its_certificate(tls_relayed):
    relay, _, _ = parse(_awi_workers(tls_relayed.fed)[0].removeprefix("relay://"))
    host, port = relay.rsplit(":", 1)
    ca = tls_relayed.root / "ca"
    ctx = security(ca / "ca.pem", ca / "site-geomar.pem", ca / "site-geomar-key.pem")
    ctx = ctx.get_connection_args("worker")["ssl_context"]

    async def register_as_geomar(endpoint: str) -> dict:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b'{"op": "starttls"}\n')
        assert json.loads(await reader.readline())["ok"]
        await writer.start_tls(ctx)
        writer.write(json.dumps({"op": "register", "endpoint": endpoint,
                                 "token": "guess"}).encode() + b"\n")
        reply = json.loads(await reader.readline())
        writer.close()
        return reply

    reply = asyncio.run(register_as_geomar("awi/127.0.0.1:1"))
    assert not reply["ok"]
    assert "register with that site's certificate" in reply["error"]
    # its own site, but without the token the hub gave geomar's site process
    reply = asyncio.run(register_as_geomar("geomar/127.0.0.1:1"))
    assert not reply["ok"] and "relay token" in reply["error"]
