"""Scheduler side of dask-federation: routing, traffic accounting and the catalog.

Install into any distributed scheduler by preload::

    dask scheduler --preload scheduler_plugins

``dask federation hub`` does exactly that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .boundary import BoundaryPlugin
from .catalog import CatalogPlugin
from .outage import OutagePlugin
from .policy import PolicyPlugin
from .refusal import Refusals
from .relay import RelayPlugin
from .routing import RoutingPlugin
from .scaling import ScalingPlugin
from .state import FederationState
from .traffic import TrafficPlugin
from .trust import TrustPlugin

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler

__all__ = [
    "BoundaryPlugin", "CatalogPlugin", "FederationState", "OutagePlugin", "PolicyPlugin",
    "RelayPlugin", "RoutingPlugin", "ScalingPlugin",
    "TrafficPlugin", "TrustPlugin", "install",
]


def install(scheduler: Scheduler) -> FederationState:
    """Add the federation plugins to ``scheduler``; returns their shared state."""
    existing = scheduler.plugins.get(CatalogPlugin.name)
    if existing is not None:  # idempotent: preloaded twice
        return existing.state
    state = FederationState(scheduler)
    from .dashboard import DashboardPlugin  # the dashboard page, HTTP API and JS client
    from .http_api import HttpApiPlugin

    routing = RoutingPlugin(state)
    refusals = Refusals(scheduler, routing)
    for plugin in (
        CatalogPlugin(state), routing, TrafficPlugin(state), BoundaryPlugin(state),
        OutagePlugin(state, routing),
        # after routing: these override its placement of what they refuse or pin
        PolicyPlugin(state, routing, refusals),
        TrustPlugin(state, refusals), RelayPlugin(state), ScalingPlugin(state, routing),
        DashboardPlugin(state), HttpApiPlugin(state),
    ):
        scheduler.add_plugin(plugin)
    return state


def dask_setup(scheduler: Scheduler) -> None:
    """Preload entry point (``--preload scheduler_plugins``)."""
    install(scheduler)
