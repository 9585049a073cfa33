"""The hub's half of capabilities: sign every site-bound call it authorises.

When a graph arrives, after the routing, policy and trust plugins have placed,
followed and checked it, this plugin attaches to each task that makes a site-bound call
(:mod:`federation.sitecalls`: a read, method call or result write, as seen in its spec,
also fused) one capability per call and serving site (a replica's site has its own
secret), bound to the task key, the submitting identity and the task's egress class (see
:mod:`federation.capability`). Whatever a client put under the ``federation``
annotation itself is dropped. Refused tasks get nothing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import dask
from dask.utils import parse_timedelta

from federation.capability import ANNOTATION, sign
from federation.protocol import site_of_ref

from .grants import principal
from .plugin import FederationPlugin
from .policy import PolicyPlugin
from .scan import ScanPlugin
from .state import FederationState
from .trust import TrustPlugin

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler


class CapabilityPlugin(FederationPlugin):
    """Signs the site-bound calls of new tasks (runs after the policy and trust plugins)."""

    name = "federation-capabilities"

    # after policy and trust: signs what they let through, with its egress class
    requires = (ScanPlugin, PolicyPlugin, TrustPlugin)

    def __init__(self, state: FederationState):
        self.state = state
        self.policy = state.plugin(PolicyPlugin)
        #: how long a capability stays valid: a task parked or recomputed later than
        #: this fails with CapabilityError and must be resubmitted
        self.ttl = parse_timedelta(dask.config.get("federation.capability-ttl"))

    def _serving_sites(self) -> dict[str, set[str]]:
        """``site/name`` -> sites of its replicas."""
        replicas: dict[str, set[str]] = defaultdict(set)
        for record in self.state.sites.values():
            for info in record.catalog.values():
                if info.replica_of:
                    replicas[info.replica_of].add(record.name)
        return replicas

    def update_graph(
        self, scheduler: Scheduler, *, client: str, tasks: list,
        annotations: dict[str, dict] | None = None, **kwargs: Any,
    ) -> None:
        for key in (annotations or {}).get(ANNOTATION, ()):  # only the hub signs
            ts = scheduler.tasks.get(key)
            if ts is not None and ts.annotations:
                ts.annotations.pop(ANNOTATION, None)
        who = principal(self.state.client_identity.get(client)) or "anonymous"
        expires = float(int(time.time() + self.ttl))
        replicas: dict[str, set[str]] | None = None
        secrets = self.state.site_secrets
        for key, calls in self.state.graph.bound.items():
            if key in self.state.refusals.pending:
                continue
            ts = scheduler.tasks[key]
            bound = set(calls)
            egress = self.policy.egress_of(key)
            caps = []
            for kind, ref in sorted(bound):
                sites = {site_of_ref(ref)}
                if kind == "dataset":
                    if replicas is None:
                        replicas = self._serving_sites()
                    sites |= replicas.get(ref, set())
                for site in sorted(sites):
                    if (secret := secrets.get(site)) is not None:
                        caps.append(sign(secret, kind, ref, key, who, egress, expires).to_wire())
            ts.annotations = {**(ts.annotations or {}), ANNOTATION: {"caps": caps}}
