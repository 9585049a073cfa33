"""Each new graph is scanned once for site-bound calls, for every plugin.

The routing, trust, policy, capability and moves plugins all need, for each new task,
the site-bound calls inside its spec (:func:`federation.graph.bindings`, a walk of the
whole spec). This plugin runs first and does the walk once per task; the others read
:attr:`FederationState.graph <scheduler_plugins.state.FederationState.graph>` in their
``update_graph``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from federation.graph import Binding, bindings

from .plugin import FederationPlugin

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler, TaskState


@dataclass
class NewGraph:
    """The tasks a graph adds (valid during the plugins' ``update_graph`` hooks)."""

    #: tasks new to the scheduler (state ``released``), in the order the client sent them
    tasks: list[TaskState] = field(default_factory=list)
    #: key -> the site-bound calls of its spec, ``(kind, "site/name")``, in spec order
    #: (a call may appear twice); only tasks with at least one
    bound: dict[Any, list[Binding]] = field(default_factory=dict)


class ScanPlugin(FederationPlugin):
    """Scans each new task's spec once for site-bound calls."""

    name = "federation-scan"

    def update_graph(
        self, scheduler: Scheduler, *, client: str, tasks: list, **kwargs: Any
    ) -> None:
        graph = NewGraph()
        for key in tasks:
            ts = scheduler.tasks.get(key)
            if ts is None or ts.state != "released":
                continue
            graph.tasks.append(ts)
            if ts.run_spec is not None and (bound := list(bindings(ts.run_spec))):
                graph.bound[key] = bound
        self.state.graph = graph
