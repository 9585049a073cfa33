"""Every hub handler checks its caller; results belong to their publisher; workers dial only
federation members; revoked certificates and withdrawn grants take effect at once.

A real TLS hub with two real sites (``awi`` shares ``sst`` with egress ``none`` and stores
results; ``geomar`` shares ``chl``); each attack is tried with real certificates over real
connections, next to the legitimate call it imitates.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import numpy as np
import pytest
import yaml
from cryptography import x509
from distributed.core import rpc

from federation import PolicyError, protocol
from federation.local import LocalFederation
from federation.security import init_ca, issue, issued, revoke, revoked_serials, security

from .conftest import make_site
from .pki import _cli, _creds
from .wait import wait

GRANTS = {"alice": ["awi/*", "geomar/*"], "bob": ["awi/*"], "carol": ["awi/*"],
          "site:awi": ["*"], "site:geomar": ["*"]}


@pytest.fixture(scope="module")
def hub(pki, tmp_path_factory):
    root = tmp_path_factory.mktemp("handlers")
    hub_yaml = root / "hub.yaml"
    hub_yaml.write_text(yaml.safe_dump({"grants": GRANTS}))
    lf = LocalFederation(
        root / "logs", dashboard=False, tls=_creds(pki, "hub-hub"),
        hub_args=("--config", str(hub_yaml)),
    )
    lf.start_hub()
    try:
        awi = make_site(root, "awi", "sst", "sst.zarr", size=10 * 180 * 360 * 4,
                        results_dir="results")
        cfg = yaml.safe_load(awi.read_text())
        cfg["datasets"]["sst"]["egress"] = "none"
        awi.write_text(yaml.safe_dump(cfg))
        geomar = make_site(root, "geomar", "chl", "chl.zarr", size=10 * 180 * 360 * 4)
        for site, path in (("awi", awi), ("geomar", geomar)):
            ca, cert, key = _creds(pki, f"site-{site}")
            lf.start_site(path, "--tls-ca-file", ca, "--tls-cert", cert, "--tls-key", key)
        lf.root, lf.hub_yaml = root, hub_yaml
        yield lf
    finally:
        lf.close()


def call(lf, pki, who: str, op: str, **kwargs):
    """One RPC to the hub (or ``address=``) over a fresh TLS connection as ``who``."""
    sec = security(*_creds(pki, who))
    address = kwargs.pop("address", lf.address)

    async def go():
        async with rpc(address, connection_args=sec.get_connection_args("client")) as r:
            return await getattr(r, op)(**kwargs)

    return asyncio.run(go())


def connect(lf, pki, who: str):
    return lf.connect(security=security(*_creds(pki, who)))


def _refused(fn, *args, errors: tuple = (PermissionError,), **kwargs) -> bool:
    """Whether ``fn(*args, **kwargs)`` raises one of ``errors`` (others propagate)."""
    try:
        fn(*args, **kwargs)
    except errors:
        return True
    return False


def workers(fed) -> dict[str, str]:
    """site -> one worker address."""
    info = fed.client.scheduler_info(n_workers=-1)["workers"]
    return {next(r[5:] for r in w["resources"] if r.startswith("site:")): a
            for a, w in info.items()}


def test_every_federation_handler_is_in_the_table(hub, pki):
    from scheduler_plugins.handlers import TABLE

    with connect(hub, pki, "hub-hub") as fed:
        ops = fed.client.run_on_scheduler(
            lambda dask_scheduler: sorted(h for h in dask_scheduler.handlers
                                          if h.startswith(protocol.PREFIX))
        )
    assert ops and set(ops) <= set(TABLE)


def test_user_cannot_announce_a_result_that_shadows_a_dataset(hub, pki):
    """Attack 1: a user announces 'awi/sst' with egress 'any' as a result of awi."""
    sst = call(hub, pki, "user-alice", protocol.DATASET, name="awi/sst")
    assert sst["egress"] == "none"
    forged = {"info": {**sst, "egress": "any"}, "provenance": {}}
    any_worker = "tls://127.0.0.1:1"  # the old check trusted a worker address argument
    for kwargs in ({"session": "guess"}, {"session": "guess", "worker": any_worker}):
        with pytest.raises(PermissionError, match="user 'alice' cannot announce results"):
            call(hub, pki, "user-alice", protocol.ADD_RESULT, site="awi", result=forged,
                 **kwargs)
    with connect(hub, pki, "user-alice") as fed:
        assert fed.info("awi/sst").egress == "none"
        with pytest.raises(PolicyError, match="egress policy 'none'"):
            fed.open_dataset("awi/sst").sst.mean().compute()
        # the legitimate way a result appears: computed and stored at awi
        sst_mean = fed.open_dataset("awi/sst").sst.mean(["lat", "lon"])
        ref = fed.publish_result("alice-mean", sst_mean)
        assert ref == "awi/results/alice-mean"
        assert fed.provenance(ref)["published_by"] == "alice"


def test_site_cannot_announce_entries_outside_its_namespace(hub, pki):
    """A hostile site announces awi's dataset, or a 'result' named like a dataset."""
    sst = call(hub, pki, "site-geomar", protocol.DATASET, name="awi/sst")
    chl = call(hub, pki, "site-geomar", protocol.DATASET, name="geomar/chl")
    as_result = {"info": {**sst, "egress": "any"}, "provenance": {}}
    own_name = {"info": {**chl, "egress": "any"}, "provenance": {}}  # 'geomar/chl', no results/
    register = dict(site="geomar", session="s", datasets=[], join=True)
    with pytest.raises(PermissionError, match="cannot announce result awi/sst of site 'awi'"):
        call(hub, pki, "site-geomar", protocol.REGISTER_SITE, **register, results=[as_result])
    with pytest.raises(PermissionError, match="results are named geomar/results/NAME"):
        call(hub, pki, "site-geomar", protocol.REGISTER_SITE, **register, results=[own_name])
    with pytest.raises(PermissionError, match="cannot announce dataset awi/sst"):
        call(hub, pki, "site-geomar", protocol.REGISTER_SITE,
             **{**register, "datasets": [sst]})
    with pytest.raises(PermissionError, match="site 'geomar' cannot announce results of site"):
        call(hub, pki, "site-geomar", protocol.ADD_RESULT, site="awi", session="s",
             result=as_result)
    with pytest.raises(PermissionError, match="needs the session of a live registration"):
        call(hub, pki, "site-geomar", protocol.ADD_RESULT, site="geomar", session="s",
             result=own_name)
    with connect(hub, pki, "user-alice") as fed:
        catalog = fed.catalog().set_index("dataset")
        assert catalog.loc["awi/sst", "egress"] == "none"
        assert catalog.loc["geomar/chl", "egress"] == "any"  # the real one, unchanged
        assert fed.info("geomar/chl").version == chl["version"]


@pytest.mark.parametrize(
    "op, kwargs, legit",
    [
        (protocol.REGISTER_SITE, {"session": "s", "datasets": []}, "already registered"),
        (protocol.HEARTBEAT, {"session": "s"}, {"status": "unknown"}),
        (protocol.UNREGISTER_SITE, {"session": "s"}, {"status": "OK"}),
        (protocol.RESULT_PUBLISHER, {"session": "s", "ref": "x", "key": "k"},
         "needs the session"),
        (protocol.RELAY_RESET, {}, {"cut": 0}),
    ],
)
def test_site_handlers_act_only_under_the_callers_name(hub, pki, op, kwargs, legit):
    """Every handler that takes a site name: another site's name and users are refused."""
    with pytest.raises(PermissionError, match="site 'geomar' cannot .* site 'awi'"):
        call(hub, pki, "site-geomar", op, site="awi", **kwargs)
    with pytest.raises(PermissionError, match="user 'alice' cannot .* site 'geomar'"):
        call(hub, pki, "user-alice", op, site="geomar", **kwargs)
    # naming itself, the site gets past the check (a made-up session changes nothing)
    if isinstance(legit, str):
        with pytest.raises(Exception, match=legit) as info:
            call(hub, pki, "site-geomar", op, site="geomar", **kwargs)
        assert "cannot" not in str(info.value)
    else:
        assert call(hub, pki, "site-geomar", op, site="geomar", **kwargs) == legit
    assert "geomar" in call(hub, pki, "user-alice", protocol.SITES)


def test_member_list_is_for_sites(hub, pki):
    with pytest.raises(PermissionError, match="user 'alice' may not call 'federation_members'"):
        call(hub, pki, "user-alice", protocol.MEMBERS)
    members = call(hub, pki, "site-geomar", protocol.MEMBERS)
    with connect(hub, pki, "user-alice") as fed:
        assert sorted(members["workers"]) == sorted(workers(fed).values())


def test_results_belong_to_their_publisher(hub, pki):
    import dask

    from federation.sitecalls import write_result

    with connect(hub, pki, "user-alice") as alice:
        mean = alice.open_dataset("awi/sst").sst.mean(["lat", "lon"])
        ref = alice.publish_result("owned", mean)
    with connect(hub, pki, "user-bob") as bob:
        mean = bob.open_dataset("awi/sst").sst.mean(["lat", "lon"])
        with pytest.raises(PermissionError, match="published by 'alice'; only they or site"):
            bob.publish_result("owned", mean * 0, overwrite=True)
        # a forged provenance: another publisher, a dataset never read
        forged = {"result": "awi/results/bobs", "published_by": "alice@laptop",
                  "datasets": [{"dataset": "geomar/chl", "version": "x"}]}
        bob.client.compute(
            dask.delayed(write_result, pure=False)("awi/results/bobs", mean, forged, False)
        ).result()
        prov = bob.provenance("awi/results/bobs")
        assert prov["published_by"] == "bob"
        assert [d["dataset"] for d in prov["datasets"]] == ["awi/sst"]
        assert prov["claims"]["published_by"] == "alice@laptop"
        assert prov["claims"]["datasets"] == forged["datasets"]
        # bob's grant lets him open alice's result; it keeps the class of its lineage
        # (awi/sst's 'none'), so its values stay at awi
        assert bob.info(ref).egress == "none"
        with pytest.raises(PolicyError, match="egress policy 'none'"):
            bob.open_dataset(ref).sst.compute()
    with connect(hub, pki, "user-alice") as alice:
        alice.publish_result("owned", mean * 2, overwrite=True)  # the publisher may
        assert alice.provenance(ref)["published_by"] == "alice"
    with connect(hub, pki, "site-awi") as site:  # and the site itself may
        site.publish_result("owned", site.open_dataset("awi/sst").sst.mean(["lat", "lon"]),
                            overwrite=True)
        assert site.provenance(ref)["published_by"] == "site:awi"


def _listening() -> tuple[socket.socket, list]:
    """A TCP port that records whoever connects."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list = []

    def accept():
        server.settimeout(15)
        try:
            while True:
                accepted.append(server.accept()[0])
        except OSError:
            return

    threading.Thread(target=accept, daemon=True).start()
    return server, accepted


def test_worker_gathers_only_from_federation_workers(hub, pki):
    """Attack 3: a peer makes a site worker dial an arbitrary host:port.

    Users cannot reach workers at all (workers close users' connections, and the hub
    refuses them ``run``/``proxy``), so the attacker here is another site's certificate,
    and the hub's dialling handlers are tried with the hub's own certificate."""
    server, accepted = _listening()
    target = f"tls://127.0.0.1:{server.getsockname()[1]}"
    with connect(hub, pki, "user-alice") as fed, connect(hub, pki, "hub-hub") as admin:
        where = workers(fed)
        with pytest.raises(PermissionError, match="not one .federation.peers-only"):
            call(hub, pki, "site-geomar", "gather", address=where["awi"],
                 who_has={"anything": [target]})
        # nor the hub, asked to run something on (or proxy to) that "worker"
        with pytest.raises(PermissionError, match="reaches only workers of the federation"):
            admin.client.run(lambda: 1, workers=[target])
        with pytest.raises(PermissionError, match="reaches only workers of the federation"):
            call(hub, pki, "hub-hub", "proxy", msg={"op": "identity"}, worker=target)
        time.sleep(1)  # a negative check: nobody dials in a while
        assert accepted == []
        assert admin.client.run(lambda: 1, workers=[where["geomar"]]) == {where["geomar"]: 1}
        # fetching from a member works: geomar's worker copies a key held at awi
        [x] = admin.client.scatter([np.arange(5)], workers=[where["awi"]])
        reply = call(hub, pki, "site-geomar", "gather", address=where["geomar"],
                     who_has={x.key: [where["awi"]]})
        assert reply["status"] == "OK"
        key = x.key
        held = admin.client.run(lambda dask_worker: key in dask_worker.data,
                                workers=[where["geomar"]])
        assert held == {where["geomar"]: True}
    server.close()


def _acquire(dask_worker, key, holder: str) -> None:
    """What the scheduler orders with ``acquire-replicas`` (and a ``compute-task``'s
    ``who_has``): fetch ``key`` from ``holder`` through the worker's state machine."""
    from distributed.worker_state_machine import AcquireReplicasEvent

    dask_worker.handle_stimulus(AcquireReplicasEvent(
        who_has={key: [holder]}, nbytes={key: 40}, stimulus_id=f"test-acquire-{holder}"))


def _fetched(dask_worker, key) -> tuple[bool, str | None]:
    """Whether the worker holds ``key``, and the error fetching it failed with."""
    ts = dask_worker.state.tasks.get(key)
    error = getattr(ts, "exception", None)
    return key in dask_worker.data, None if error is None else str(getattr(error, "data", error))


def test_scheduled_fetches_reach_only_federation_workers(hub, pki):
    """Attack 3 by the scheduler's own orders: a fetch naming a stranger as the holder of
    an input fails without a connection; fetching from another site's worker works."""
    server, accepted = _listening()
    stranger = f"tls://127.0.0.1:{server.getsockname()[1]}"
    with connect(hub, pki, "hub-hub") as admin:
        where = workers(admin)
        forged, real = admin.client.scatter([np.arange(5), np.arange(6)],
                                            workers=[where["awi"]], hash=False)
        on_geomar = {"workers": [where["geomar"]]}
        admin.client.run(_acquire, key=forged.key, holder=stranger, **on_geomar)
        admin.client.run(_acquire, key=real.key, holder=where["awi"], **on_geomar)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = admin.client.run(_fetched, key=forged.key, **on_geomar)[where["geomar"]]
            if state[1] is not None:
                break
            time.sleep(0.2)
        assert state[0] is False and "not one (federation.peers-only)" in state[1]
        assert admin.client.run(_fetched, key=real.key, **on_geomar)[where["geomar"]] == (
            True, None)
    assert accepted == []
    server.close()


def test_removing_a_grant_and_revoking_a_certificate_take_effect(hub, pki):
    """Revocation: no hub restart; the revoked user is disconnected and turned away."""
    ca = pki / "ca"
    issue(ca, "user", "carol")
    with connect(hub, pki, "user-carol") as carol, connect(hub, pki, "user-bob") as bob:
        assert bob.info("awi/sst").egress == carol.info("awi/sst").egress == "none"
        # a grant withdrawn in hub.yaml is gone within seconds
        hub.hub_yaml.write_text(yaml.safe_dump({"grants": {**GRANTS, "bob": []}}))
        wait(lambda: _refused(bob.info, "awi/sst"), 20, "bob's grant withdrawn")
        with pytest.raises(PermissionError, match="user 'bob' has no grant for 'awi/sst'"):
            bob.info("awi/sst")
        hub.hub_yaml.write_text(yaml.safe_dump({"grants": GRANTS}))

        proc = _cli("certs", "revoke", str(ca), "--user", "carol")
        assert proc.returncode == 0 and "1 certificate(s) revoked" in proc.stdout
        wait(lambda: carol.client.status != "running", 20, "carol disconnected")
        assert carol.client.status != "running"
        with pytest.raises((OSError, TimeoutError)):
            hub.connect(security=security(*_creds(pki, "user-carol")), timeout="3s")
        # everyone else carries on
        with connect(hub, pki, "user-alice") as alice:
            assert alice.info("awi/sst").egress == "none"
            assert bob.info("awi/sst").egress == "none"
    with connect(hub, pki, "user-alice") as alice:
        awi = workers(alice)["awi"]
        # a site's certificate reaches another site's worker (users' never do)
        assert call(hub, pki, "site-geomar", "identity", address=awi)["type"] == "Worker"

        # a revoked site is offline at once: its registration ends, its workers drop out
        assert _cli("certs", "revoke", str(ca), "--site", "geomar").returncode == 0
        wait(lambda: alice.sites()["geomar"]["status"] == "offline", 20, "geomar offline")
        assert alice.sites()["geomar"] == {**alice.sites()["geomar"], "status": "offline",
                                          "workers": []}
        assert "geomar/chl" not in set(alice.catalog()["dataset"])
        assert alice.info("awi/sst").egress == "none"
        # site workers learn it from the hub: geomar's certificate no longer reaches awi's
        wait(lambda: _refused(call, hub, pki, "site-geomar", "identity", address=awi,
                              errors=(OSError, TimeoutError)), 20, "awi's worker refusing geomar")
        with pytest.raises((OSError, TimeoutError)):
            call(hub, pki, "site-geomar", "identity", address=awi)


def test_certificate_lifetimes_and_renewal(tmp_path):
    init_ca(tmp_path)
    user, _ = issue(tmp_path, "user", "dora")
    site, _ = issue(tmp_path, "site", "dkrz")
    days = [(c.not_valid_after_utc - c.not_valid_before_utc).days
            for c in map(lambda p: x509.load_pem_x509_certificate(p.read_bytes()), (user, site))]
    assert days == [90, 825]
    old = issued(tmp_path, "user", "dora")
    proc = _cli("certs", "renew", str(tmp_path), "--user", "dora", "--revoke-old")
    assert proc.returncode == 0, proc.stderr
    renewed = x509.load_pem_x509_certificate(user.read_bytes()).serial_number
    assert renewed not in old and issued(tmp_path, "user", "dora") == old | {renewed}
    assert revoked_serials(tmp_path / "crl.pem", tmp_path / "ca.pem") == old
    proc = _cli("certs", "revoke", str(tmp_path), "--user", "nobody")
    assert proc.returncode == 2 and "no certificate was issued for user 'nobody'" in proc.stderr
    revoke(tmp_path, {renewed})
    assert revoked_serials(tmp_path / "crl.pem", tmp_path / "ca.pem") == old | {renewed}
