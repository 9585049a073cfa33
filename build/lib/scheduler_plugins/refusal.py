"""Refusing work at the hub: hold tasks on a resource no worker has, then fail them.

Plugins cannot fail tasks from inside ``update_graph`` or a transition hook, so a refused
task is restricted to :data:`REFUSED` (it goes to ``no-worker`` and never runs) and failed
with the given exception on the next tick of the event loop; its dependents fail with it.
"""

from __future__ import annotations

from time import time
from typing import TYPE_CHECKING, Any

from distributed.protocol import pickle

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler, TaskState

    from .routing import RoutingPlugin

#: A resource no worker advertises.
REFUSED = "federation:refused"


class Refusals:
    """Tasks held for failing, and the exception each fails with."""

    def __init__(self, scheduler: Scheduler, routing: RoutingPlugin):
        self.scheduler = scheduler
        self.routing = routing
        self.pending: dict[Any, Exception] = {}

    def refuse(self, tasks: list[TaskState], error: Exception) -> None:
        for ts in tasks:
            self.routing.parked.pop(ts.key, None)
            self.routing.pinned.add(ts.key)  # never placed again
            ts.worker_restrictions = ts.host_restrictions = None
            ts.resource_restrictions = {REFUSED: 1}
            ts.loose_restrictions = False
            self.pending[ts.key] = error
        self.scheduler.loop.add_callback(self._fail)

    def _fail(self) -> None:
        scheduler = self.scheduler
        stimulus_id = f"federation-refused-{time()}"
        recommendations: dict = {}
        for key, error in list(self.pending.items()):
            ts = scheduler.tasks.get(key)
            if ts is None or ts.state in ("erred", "forgotten", "released", "memory"):
                del self.pending[key]
            elif ts.state == "no-worker":
                del self.pending[key]
                recommendations.update(
                    scheduler.transition(
                        key, "erred", exception=pickle.dumps(error), cause=key,
                        stimulus_id=stimulus_id,
                    )
                )
        scheduler.transitions(recommendations, stimulus_id=stimulus_id)
        if self.pending:  # tasks still waiting on refused inputs fail through them
            scheduler.loop.call_later(0.1, self._fail)
