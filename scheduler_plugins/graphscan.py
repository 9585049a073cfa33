"""Each new graph's site-bound calls, found once for every plugin that needs them.

Routing, policy, trust, capabilities and moves all need to know which new tasks call
:func:`~federation.read.read_chunk`, a shared method or a result write. Walking every task
spec of a 200 000-task graph costs the hub's event loop seconds, so the walk is done once
per ``update_graph`` (the first plugin to ask does it) and shared; the answer only holds
the few tasks that have such calls, so the others cost one dict lookup afterwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from federation.graph import Binding, bindings

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler


class GraphScan:
    """Site-bound calls of the tasks of the graph being added (one ``update_graph``)."""

    def __init__(self) -> None:
        #: (stimulus id, task keys object) of the scanned graph, and its answer
        self._of: tuple[str, int] | None = None
        self._bound: dict[Any, tuple[Binding, ...]] = {}

    def bound(
        self, scheduler: Scheduler, tasks: list, stimulus_id: str
    ) -> dict[Any, tuple[Binding, ...]]:
        """key -> its ``(kind, ref)`` calls (sorted, no repeats), for the new tasks
        (state ``released``) among ``tasks`` that have any; tasks without are absent.

        The same ``stimulus_id`` and ``tasks`` list (one ``update_graph``, all plugins
        get the same objects) return the stored answer without walking again.
        """
        of = (stimulus_id, id(tasks))
        if self._of != of:
            found: dict[Any, tuple[Binding, ...]] = {}
            for key in tasks:
                ts = scheduler.tasks.get(key)
                if ts is None or ts.state != "released" or ts.run_spec is None:
                    continue
                if calls := set(bindings(ts.run_spec)):
                    found[key] = tuple(sorted(calls))
            self._of, self._bound = of, found
        return self._bound
