"""Refusing work at the hub: hold tasks on a resource no worker has, then fail them.

Plugins cannot fail tasks from inside ``update_graph`` or a transition hook, so a refused
task is restricted to :data:`REFUSED` (it goes to ``no-worker`` and never runs) and failed
with the given exception on the next tick of the event loop; its dependents fail with it.
"""

from __future__ import annotations

from time import time
from typing import TYPE_CHECKING, Any

from distributed.protocol import pickle

from .routing import RoutingPlugin

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler, TaskState

    from .state import FederationState

#: A resource no worker advertises.
REFUSED = "federation:refused"


def fail(scheduler: Scheduler, keys: list[Any], error: Exception, why: str) -> None:
    """Fail those of the tasks ``keys`` that wait in ``no-worker`` with ``error``; their
    dependents fail with them. ``why`` names the cause in the stimulus id (``refused``)."""
    stimulus_id = f"federation-{why}-{time()}"
    payload = pickle.dumps(error)
    recommendations: dict = {}
    for key in keys:
        if (ts := scheduler.tasks.get(key)) is None or ts.state != "no-worker":
            continue
        recommendations.update(
            scheduler.transition(
                key, "erred", exception=payload, cause=key, stimulus_id=stimulus_id
            )
        )
    scheduler.transitions(recommendations, stimulus_id=stimulus_id)


class Refusals:
    """Tasks held for failing, and the exception each fails with."""

    def __init__(self, state: FederationState):
        self.state = state
        self.pending: dict[Any, Exception] = {}

    def refuse(self, tasks: list[TaskState], error: Exception) -> None:
        routing = self.state.plugin(RoutingPlugin)
        for ts in tasks:
            routing.hold(ts, REFUSED)
            self.pending[ts.key] = error
        self.state.scheduler.loop.add_callback(self._fail)

    def _fail(self) -> None:
        scheduler = self.state.scheduler
        #: id(error) -> (error, the keys failing with it now)
        ready: dict[int, tuple[Exception, list[Any]]] = {}
        for key, error in list(self.pending.items()):
            ts = scheduler.tasks.get(key)
            if ts is None or ts.state in ("erred", "forgotten", "released", "memory"):
                del self.pending[key]
            elif ts.state == "no-worker":
                del self.pending[key]
                ready.setdefault(id(error), (error, []))[1].append(key)
        for error, keys in ready.values():
            fail(scheduler, keys, error, "refused")
        if self.pending:  # tasks still waiting on refused inputs fail through them
            scheduler.loop.call_later(0.1, self._fail)
