"""Data-egress policies: what derived from a dataset may leave its site.

A site sets, per dataset, ``egress: any | aggregated | none`` (and for ``aggregated``
``max_egress_bytes``, default 1 % of the dataset's size). The hub follows every task's
*lineage*: the restricted datasets it derives from. A task that *is* a call of a shared
method of the owning site is the sanctioned way out: the method's declared ``release``
class replaces that site's datasets in the lineage of its output. A stored result keeps
the most restrictive class of its lineage.

``none``
    Tasks deriving from the dataset are bound to its site, so no derived byte is sent to
    another site; gathering such a result is refused. A task that would need two
    ``none`` datasets of different sites is refused when the graph arrives.
``aggregated``
    A derived result may cross a border (to another site's task, or to a client) only
    if it is at most ``max_egress_bytes``; larger ones are refused before the transfer.

Refusals raise :class:`~federation.errors.PolicyError` naming dataset, policy and step,
and are counted in the traffic record.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from dask._task_spec import Task
from distributed import SchedulerPlugin

from federation.capability import egress_class
from federation.errors import PolicyError
from federation.graph import site_of_ref
from federation.labels import site_label
from federation.methods import run_method
from federation.results import write_result

from .refusal import Refusals
from .routing import RoutingPlugin, _label_site
from .state import FederationState

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler, TaskState

logger = logging.getLogger(__name__)


class PolicyPlugin(SchedulerPlugin):
    """Tracks lineage of restricted datasets and enforces their egress policies."""

    name = "federation-policy"

    def __init__(self, state: FederationState, routing: RoutingPlugin, refusals: Refusals):
        self.state = state
        self.routing = routing
        self.refusals = refusals
        #: key -> restricted datasets (``site/name``) it derives from
        self.lineage: dict[Any, frozenset[str]] = {}
        #: result-write key -> the lineage of what it stores
        self.written: dict[Any, frozenset[str]] = {}

    async def start(self, scheduler: Scheduler) -> None:
        """Check results before the hub gathers them for a client."""
        gather = scheduler.handlers["gather"]

        async def checked_gather(keys, serializers=None):
            for key in keys:
                ts = scheduler.tasks.get(key)
                if ts is not None:
                    self.check_leaving(ts, "the client")
            return await gather(keys=keys, serializers=serializers)

        scheduler.handlers["gather"] = checked_gather

    def _policy(self, ref: str) -> tuple[str, int | None]:
        """(policy, byte limit) of a dataset or result, or of a method's output."""
        info = self.state.datasets().get(ref)
        if info is not None:
            return info.egress, info.max_egress_bytes
        method = self.state.methods().get(ref)
        if method is not None and method.release:
            return method.release, method.max_egress_bytes
        return "any", None

    def _error(self, ref: str, step: str) -> PolicyError:
        policy, limit = self._policy(ref)
        self.state.egress_refusals[f"{ref} ({policy})"] += 1
        rule = "nothing derived from it may leave" if policy == "none" else (
            f"only results up to {limit:,} bytes may leave"
        )
        what = "dataset" if ref in self.state.datasets() else "the output of method"
        return PolicyError(
            f"{what} {ref!r} has egress policy {policy!r} ({rule} site "
            f"{site_of_ref(ref)!r}, except through its published methods): refused {step}"
        )

    def egress_of(self, key: Any) -> str:
        """The egress class of a task's output (of what it stores, for a result write):
        the most restrictive of its lineage, as :func:`federation.capability.egress_class`."""
        worst, limit = "any", None
        for ref in self.lineage.get(key) or self.written.get(key) or ():
            policy, bytes_ = self._policy(ref)
            if policy == "none":
                return "none"
            if policy == "aggregated":
                worst = "aggregated"
                limit = bytes_ if limit is None or bytes_ is None else min(limit, bytes_)
        return egress_class(worst, limit)

    # -- when the graph arrives -----------------------------------------------------------

    def update_graph(
        self, scheduler: Scheduler, *, client: str, tasks: list, stimulus_id: str,
        **kwargs: Any,
    ) -> None:
        """Follow lineage through the new tasks; bind ``none``-derived tasks to their site.

        A task's lineage is the union of its inputs' and the restricted datasets it reads.
        Only a task that *is* a call of a shared method (its root function) changes it:
        the method's declared ``release`` class replaces its own site's part; a method
        without one passes its inputs' class on. A reference to a method somewhere inside
        a task clears nothing. Runs after the routing plugin, whose placement it
        overrides for the tasks it binds.
        """
        datasets = self.state.datasets()
        methods = self.state.methods()
        restricted = {ref for ref, info in datasets.items() if info.egress != "any"}
        releasing = {ref for ref, m in methods.items() if m.release}
        if not restricted and not releasing and not self.lineage:
            return
        new = sorted(
            (ts for key in tasks if (ts := scheduler.tasks.get(key)) and ts.state == "released"),
            key=lambda ts: ts.priority,  # dask's order: inputs before their users
        )
        scanned = self.state.scan.bound(scheduler, tasks, stimulus_id)
        for ts in new:
            bound = scanned.get(ts.key, ())
            lineage = {ref for kind, ref in bound if kind == "dataset" and ref in restricted}
            for dts in ts.dependencies:
                lineage |= self.lineage.get(dts.key, frozenset())
            root = ts.run_spec.func if isinstance(ts.run_spec, Task) else None
            if root is run_method and ts.run_spec.args and (
                (ref := ts.run_spec.args[0]) in releasing
            ):
                site = site_of_ref(ref)
                lineage = {r for r in lineage if site_of_ref(r) != site}
                if methods[ref].release != "any":
                    lineage.add(ref)
            if not lineage:
                continue
            none_sites = {site_of_ref(r) for r in lineage if self._policy(r)[0] == "none"}
            here = _label_site(ts.resource_restrictions) if bound else None
            if len(none_sites) > 1 or (none_sites and here and here not in none_sites):
                refs = sorted(r for r in lineage if self._policy(r)[0] == "none")
                error = self._error(refs[0], f"task {ts.key!r} combines {refs} across sites")
                self.refusals.refuse(new, error)
                scheduler.log_event("federation", {"action": "policy-refused", "keys": [ts.key]})
                return
            if root is write_result:
                # it returns the stored result's catalog entry, not data; the result
                # itself keeps this lineage's class (signed into its capability)
                self.written[ts.key] = frozenset(lineage)
                continue
            self.lineage[ts.key] = frozenset(lineage)
            if none_sites and not bound:
                site = next(iter(none_sites))
                self.routing.pinned.add(ts.key)
                ts.resource_restrictions = {site_label(site): 1}
                ts.loose_restrictions = False

    # -- before transfers -------------------------------------------------------------------

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        """When a derived result lands, check it against its users' sites.

        Runs after the routing plugin has placed the newly ready dependents, and before
        they are sent to a worker (so before their inputs are fetched).
        """
        if finish == "forgotten":
            self.lineage.pop(key, None)
            self.written.pop(key, None)
            return
        if finish != "memory" or key not in self.lineage:
            return
        ts = self.state.scheduler.tasks.get(key)
        if ts is None:
            return
        for dts in ts.dependents:
            target = _label_site(dts.resource_restrictions)
            if dts.state == "waiting" and not dts.waiting_on and target:
                try:
                    self.check_leaving(ts, f"task {dts.key!r} at site {target!r}", target)
                except PolicyError as error:
                    self.refusals.refuse([dts], error)

    def check_leaving(self, ts: TaskState, step: str, target: str | None = None) -> None:
        """Raise if ``ts``'s result may not go to ``target`` (a site; ``None``: a client)."""
        for ref in sorted(self.lineage.get(ts.key, ())):
            if site_of_ref(ref) == target:
                continue
            policy, limit = self._policy(ref)
            if policy == "none" or (policy == "aggregated" and limit is not None
                                    and ts.nbytes > limit):
                raise self._error(ref, f"sending {ts.key!r} ({ts.nbytes:,} bytes) to {step}")
