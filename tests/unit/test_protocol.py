"""The hub's RPC answers are the records of :mod:`federation.protocol`; the label and
reference helpers; in-process hub (``gen_cluster``), milliseconds each."""

from __future__ import annotations

import subprocess
import sys

import pytest

from federation import protocol

from .hub import hub_cluster

#: every hub handler name of the contract
HUB_HANDLERS = {
    value for name, value in vars(protocol).items()
    if name.isupper() and isinstance(value, str) and value.startswith(protocol.PREFIX)
    and value not in (protocol.PREFIX, protocol.WORKER_TRAFFIC)
}


@hub_cluster("awi", "geomar")
async def test_hub_answers_are_the_contract_records(c, s, a, g):
    from scheduler_plugins.handlers import TABLE

    # the hub serves exactly the contract's handlers, and says who may call each
    assert {op for op in s.handlers if op.startswith(protocol.PREFIX)} == HUB_HANDLERS
    assert set(TABLE) == HUB_HANDLERS
    sites = await protocol.call(c.scheduler, protocol.SITES)
    status = {name: protocol.SiteStatus(**entry) for name, entry in sites.items()}
    assert {n: (st.status, st.nthreads) for n, st in status.items()} == {
        "awi": ("connected", 1), "geomar": ("connected", 1)}

    members = protocol.Members(**await protocol.call(c.scheduler, protocol.MEMBERS))
    assert set(members.workers) == {a.address, g.address}

    demand = await protocol.call(c.scheduler, protocol.SITE_DEMAND, site="awi")
    assert protocol.Demand(**demand).workers.keys() == {str(a.name)}

    # the hub asks each site worker for its counters under the worker's own handler name
    a.handlers[protocol.WORKER_TRAFFIC] = lambda: {"": [10, 20, 1]}
    traffic = protocol.TrafficReport(**await protocol.call(c.scheduler, protocol.TRAFFIC))
    assert traffic.rows == [("awi", "client", 10, 20, 1)]

    reply = await protocol.call(c.scheduler, protocol.REGISTER_SITE, site="dkrz",
                                session="s", datasets=[])
    reply = protocol.RegisterReply(**reply)
    assert reply.connectivity == "direct" and len(bytes.fromhex(reply.capability_key)) == 32
    assert reply.relay.token
    with pytest.raises(PermissionError, match="no record of a computation storing"):
        await protocol.call(c.scheduler, protocol.RESULT_PUBLISHER, site="awi",
                            session="test-awi", ref="awi/results/x", key="k")


def test_labels_and_references():
    assert protocol.label_site(protocol.site_label("awi")) == "awi"
    assert protocol.label_site(protocol.dataset_label("awi/sst")) == "awi"
    assert protocol.label_site("federation:held") is None
    assert protocol.bound_site({"federation:held": 1, "dataset:awi/sst": 1}) == "awi"
    assert protocol.site_of({"dataset:awi/sst": 1, "site:awi": 1}) == "awi"
    assert protocol.describe_label("dataset:awi/sst") == (
        "site 'awi' (dataset 'awi/sst' and its replicas)")
    assert protocol.split_ref("awi/results/x") == ("awi", "results/x")
    assert protocol.result_ref("awi", "x") == "awi/results/x"
    assert protocol.result_name("awi/results/x") == "x"
    assert protocol.result_name("awi/sst") is None
    with pytest.raises(ValueError, match="'sst' is not a reference of the form 'site/name'"):
        protocol.split_ref("sst")


def test_site_calls_are_recognised_by_identity():
    from federation.sitecalls import read_chunk, run_method, write_result

    assert [protocol.site_call_kind(f) for f in (read_chunk, run_method, write_result)] == [
        "dataset", "method", "result"]

    def read_chunk(*args):  # a look-alike of the same name is not a site-bound call
        return args

    assert protocol.site_call_kind(read_chunk) is None
    assert protocol.site_call_kind(print) is None


#: modules doing the site's work on its workers: neither a client nor the hub imports them
WORKER_SIDE = ("federation.read", "federation.sitecontext", "federation.result_writer",
               "federation.standing_update", "federation.versions")


def test_client_and_hub_import_no_worker_side_module():
    code = ("import sys, federation.client, scheduler_plugins, scheduler_plugins.http, "
            "scheduler_plugins.dashboard; "
            f"print([m for m in {WORKER_SIDE!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    # the site-bound calls the client puts in its graphs are importable without them
    from federation import sitecalls

    assert [module for module, _ in protocol.SITE_CALLS.values()] == [sitecalls.__name__] * 5


def test_relay_lines_round_trip():
    line = protocol.relay_line(protocol.RELAY_CONNECT, ticket="t")
    assert line.endswith(b"\n")
    assert protocol.read_relay_line(line) == {"op": "connect", "ticket": "t"}
    assert protocol.read_relay_line(protocol.relay_reply("no")) == {"ok": False, "error": "no"}
    with pytest.raises(ValueError, match="a relay message is a JSON object"):
        protocol.read_relay_line(b"[1]\n")
