"""Scheduler side of dask-federation: routing, traffic accounting and the catalog.

Install into any distributed scheduler by preload::

    dask scheduler --preload scheduler_plugins

``dask federation hub`` does exactly that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from federation.strict_hub import install_hub

from . import handlers
from .admin import AdminPlugin
from .boundary import BoundaryPlugin
from .capabilities import CapabilityPlugin
from .catalog import CatalogPlugin
from .fairshare import FairSharePlugin
from .members import MembersPlugin
from .moves import MovesPlugin
from .outage import OutagePlugin
from .policy import PolicyPlugin
from .refusal import Refusals
from .relay import RelayPlugin
from .results import ResultsPlugin
from .routing import RoutingPlugin
from .scaling import ScalingPlugin
from .sessions import SessionPlugin
from .state import FederationState
from .traffic import TrafficPlugin
from .trust import TrustPlugin

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler

__all__ = [
    "AdminPlugin", "BoundaryPlugin", "CapabilityPlugin", "CatalogPlugin", "FairSharePlugin",
    "FederationState", "MembersPlugin", "MovesPlugin", "OutagePlugin", "PolicyPlugin",
    "RelayPlugin", "ResultsPlugin", "RoutingPlugin", "ScalingPlugin", "SessionPlugin",
    "TrafficPlugin", "TrustPlugin", "install",
]


def install(scheduler: Scheduler) -> FederationState:
    """Add the federation plugins to ``scheduler``; returns their shared state."""
    existing = scheduler.plugins.get(CatalogPlugin.name)
    if existing is not None:  # idempotent: preloaded twice
        return existing.state
    state = FederationState(scheduler)
    handlers.install(state)  # every federation_* handler checks its caller (see .handlers)
    from .dashboard import DashboardPlugin  # the dashboard page, HTTP API and JS client
    from .http import HttpApiPlugin, WebAuthPlugin

    routing = RoutingPlugin(state)
    refusals = Refusals(scheduler, routing)
    # the hub runs no user code: users' messages unpickle with the strict allow-list
    install_hub(scheduler.listeners)
    policy = PolicyPlugin(state, routing, refusals)
    for plugin in (
        CatalogPlugin(state), SessionPlugin(state), routing, TrafficPlugin(state),
        BoundaryPlugin(state), OutagePlugin(state, routing), MovesPlugin(state),
        # after routing: these override its placement of what they refuse or pin
        policy,
        TrustPlugin(state, refusals),
        # after policy and trust: signs what they let through, with its egress class
        CapabilityPlugin(state, policy, refusals), AdminPlugin(state), RelayPlugin(state),
        ResultsPlugin(state), MembersPlugin(state), FairSharePlugin(state, refusals),
        ScalingPlugin(state, routing),
        DashboardPlugin(state), HttpApiPlugin(state), WebAuthPlugin(),
    ):
        scheduler.add_plugin(plugin)
    return state


def dask_setup(scheduler: Scheduler) -> None:
    """Preload entry point (``--preload scheduler_plugins``)."""
    install(scheduler)
