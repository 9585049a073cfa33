"""The routing plugin's public API (bind, pin, hold, confine, waiting_label), the one scan of
each new graph, refusals and outages, in-process (``gen_cluster``), milliseconds each."""

from __future__ import annotations

from unittest import mock

import pytest
from distributed import SchedulerPlugin, get_worker
from distributed.utils_test import async_poll_for

from federation import protocol
from federation.errors import SiteUnavailable
from federation.sitecalls import read_chunk
from scheduler_plugins import CatalogPlugin, OutagePlugin, RoutingPlugin
from scheduler_plugins.plugin import FederationPlugin, install_order
from scheduler_plugins.scan import bindings

from .hub import hub_cluster


def where(*_: object) -> str:
    """The address of the worker running this task."""
    return get_worker().address


class Steer(SchedulerPlugin):
    """Runs after the federation's plugins: pins keys ``pin-*`` to ``site`` and refuses
    keys ``refuse-*``, as the policy and trust plugins do."""

    def __init__(self, s, site: str):
        self.state = s.plugins[CatalogPlugin.name].state
        self.site = site

    def update_graph(self, scheduler, *, tasks, **kwargs) -> None:
        routing = self.state.plugin(RoutingPlugin)
        for key in tasks:
            ts = scheduler.tasks[key]
            if str(key).startswith("pin-"):
                routing.pin(ts, self.site)
            elif str(key).startswith("refuse-"):
                self.state.refusals.refuse([ts], ValueError(f"{key} refused by the test"))


@hub_cluster("awi", "geomar")
async def test_pin_overrides_placement_for_good(c, s, a, g):
    s.add_plugin(Steer(s, "geomar"))
    routing = s.plugins[CatalogPlugin.name].state.plugin(RoutingPlugin)
    [x] = await c.scatter([b"x" * 10_000], workers=[a.address])
    # routing places it next to its input at awi; the pin sends it to geomar
    assert await c.submit(where, x, key="pin-y") == g.address
    ts = s.tasks["pin-y"]
    assert routing.waiting_label(ts) == protocol.site_label("geomar")
    assert "pin-y" in routing.pinned
    # an unpinned task with the same input stays at awi
    assert await c.submit(where, x, key="free-y") == a.address


@hub_cluster("awi")
async def test_refused_tasks_never_run_and_fail_their_dependents(c, s, a):
    s.add_plugin(Steer(s, "awi"))
    x = c.submit(where, key="refuse-x")
    y = c.submit(where, x, key="after-x")
    with pytest.raises(ValueError, match="refuse-x refused by the test"):
        await x
    with pytest.raises(ValueError, match="refuse-x refused by the test"):
        await y
    assert s.tasks["refuse-x"].resource_restrictions == {"federation:refused": 1}
    assert a.state.executed_count == 0
    assert await c.submit(where, key="fine") == a.address  # the legitimate task runs


@hub_cluster("awi")
async def test_outage_fails_what_waits_for_a_missing_site(c, s, a):
    s.add_plugin(Steer(s, "ghost"))
    state = s.plugins[CatalogPlugin.name].state
    future = c.submit(where, key="pin-waits")
    await async_poll_for(
        lambda: "pin-waits" in s.tasks and s.tasks["pin-waits"].state == "no-worker", timeout=5
    )
    routing, outage = state.plugin(RoutingPlugin), state.plugin(OutagePlugin)
    assert routing.waiting_label(s.tasks["pin-waits"]) == "site:ghost"
    outage.timeout = 0.0
    outage.check()  # notes the site down
    outage.check()  # and fails what waits for it
    with pytest.raises(SiteUnavailable, match="site 'ghost' has been unavailable"):
        await future
    assert await c.submit(where, key="fine") == a.address


@hub_cluster("awi")
async def test_each_new_task_is_scanned_once_and_reads_are_parked(c, s, a):
    state = s.plugins[CatalogPlugin.name].state
    routing = state.plugin(RoutingPlugin)
    with mock.patch("scheduler_plugins.scan.bindings", side_effect=bindings) as scan:
        future = c.submit(read_chunk, "awi/sst", "sst", (slice(0, 1),), key="read")
        await async_poll_for(lambda: "read" in s.tasks and s.tasks["read"].state != "released",
                             timeout=5)
    assert scan.call_count == 1  # routing, policy, trust, capabilities, moves share it
    assert state.graph.bound == {"read": [("dataset", "awi/sst")]}
    ts = s.tasks["read"]
    # no worker holds awi/sst: the read waits, parked in the site queue
    assert routing.waiting_label(ts) == protocol.dataset_label("awi/sst")
    assert ts.state == "no-worker" and "read" in routing.pinned
    await c.cancel(future)


def test_install_order_puts_requirements_first():
    class A(FederationPlugin):
        pass

    class B(FederationPlugin):
        requires = (A,)

    class C(FederationPlugin):
        requires = (B,)

    assert install_order([C, A]) == [A, B, C]
    A.requires = (C,)
    with pytest.raises(ValueError, match="require each other: C -> B -> A -> C"):
        install_order([C])
