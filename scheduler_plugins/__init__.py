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
from .plugin import install_order
from .policy import PolicyPlugin
from .refusal import Refusals
from .relay import RelayPlugin
from .results import ResultsPlugin
from .routing import RoutingPlugin
from .scaling import ScalingPlugin
from .scan import ScanPlugin
from .sessions import SessionPlugin
from .state import FederationState
from .traffic import TrafficPlugin
from .trust import TrustPlugin

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler

__all__ = [
    "AdminPlugin", "BoundaryPlugin", "CapabilityPlugin", "CatalogPlugin", "FairSharePlugin",
    "FederationState", "MembersPlugin", "MovesPlugin", "OutagePlugin", "PolicyPlugin",
    "PLUGINS", "RelayPlugin", "ResultsPlugin", "RoutingPlugin", "ScalingPlugin", "ScanPlugin",
    "SessionPlugin", "TrafficPlugin", "TrustPlugin", "install",
]

#: The federation's plugins. :func:`install_order` puts each after the plugins it
#: ``requires``, otherwise keeps this order, which is also the order distributed runs
#: their hooks in.
PLUGINS = (
    ScanPlugin, CatalogPlugin, SessionPlugin, RoutingPlugin, TrafficPlugin, BoundaryPlugin,
    OutagePlugin, MovesPlugin, PolicyPlugin, TrustPlugin, CapabilityPlugin, AdminPlugin,
    RelayPlugin, ResultsPlugin, MembersPlugin, FairSharePlugin, ScalingPlugin,
)


def install(scheduler: Scheduler) -> FederationState:
    """Add the federation plugins to ``scheduler``; returns their shared state."""
    existing = scheduler.plugins.get(CatalogPlugin.name)
    if existing is not None:  # idempotent: preloaded twice
        return existing.state
    state = FederationState(scheduler)
    handlers.install(state)  # every federation_* handler checks its caller (see .handlers)
    from .dashboard import DashboardPlugin  # the dashboard page, HTTP API and JS client
    from .http import HttpApiPlugin, WebAuthPlugin

    # the hub runs no user code: users' messages unpickle with the strict allow-list
    install_hub(scheduler.listeners)
    state.refusals = Refusals(state)
    for cls in install_order(PLUGINS):
        # built in order: each finds the plugins it requires in the state
        plugin = state.plugins[cls] = cls(state)
        scheduler.add_plugin(plugin)
    for plugin in (DashboardPlugin(state), HttpApiPlugin(state), WebAuthPlugin()):
        state.plugins[type(plugin)] = plugin
        scheduler.add_plugin(plugin)
    return state


def dask_setup(scheduler: Scheduler) -> None:
    """Preload entry point (``--preload scheduler_plugins``)."""
    install(scheduler)
