"""The hub runs no user code: admin-only RPC handlers, refused for users.

Distributed lets any client run code on the scheduler (``run_on_scheduler``, scheduler
plugins), on every worker (``client.run``, worker and nanny plugins, ``broadcast``) and
send messages as the scheduler (``proxy``). In a federation that is code at the hub and
at sites the user holds no grant for. With TLS, :class:`AdminPlugin` refuses these
handlers unless the caller's certificate is the hub's, a site's (its own processes), or
a user listed in ``federation.admins`` (``admins:`` in hub.yaml). It also keeps
``client.scatter`` inside the sites a user holds a grant at.

Graphs themselves are unpickled on the hub by distributed; a restricted unpickler for
them is :mod:`federation.strict`'s job.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any

import dask
from distributed.core import _expects_comm

from federation.protocol import site_of
from federation.security import identity

from .grants import principal
from .handlers import same_arguments
from .plugin import FederationPlugin
from .state import FederationState

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler

logger = logging.getLogger(__name__)

#: Scheduler RPC handlers that run code, change the cluster or reveal its full state.
ADMIN_HANDLERS = (
    "run_function",  # client.run_on_scheduler
    "register_scheduler_plugin", "unregister_scheduler_plugin",
    "register_worker_plugin", "unregister_worker_plugin",
    "register_nanny_plugin", "unregister_nanny_plugin",
    "broadcast",  # client.run on workers and nannies; any message to every worker
    "proxy",  # a message to one worker, sent with the hub's identity
    "feed",  # runs pickled functions on the hub, periodically
    "get_cluster_state", "dump_cluster_state_to_url",  # every task, annotations included
    "restart", "restart_workers", "retire_workers", "terminate", "unregister",
    "set_resources", "set_restrictions",  # mint site labels, re-place tasks
    "update_data",  # claim that a worker holds data
    "benchmark_hardware",
)
#: The same, sent over a client's stream.
ADMIN_STREAM_HANDLERS = ("update-data",)


class AdminPlugin(FederationPlugin):
    """Refuses admin handlers for users; keeps a user's scatter at granted sites."""

    name = "federation-admin"

    def __init__(self, state: FederationState):
        self.state = state

    def admins(self) -> set[str]:
        return set(dask.config.get("federation.admins") or ())

    def _refusal(self, ident: tuple[str, str] | None) -> str | None:
        """Why ``ident`` is no admin (``None``: it is, or the hub has no identities)."""
        if not self.state.scheduler.address.startswith("tls://"):
            return None  # without TLS nobody has an identity: see the README
        if ident is not None and (ident[0] in ("hub", "site") or ident[1] in self.admins()
                                  and ident[0] == "user"):
            return None
        who = f"user {ident[1]!r}" if ident else "a peer without a federation certificate"
        return (f"{who} is not an administrator of this hub; ask its operator (admins: in "
                "hub.yaml lists the users who may)")

    async def start(self, scheduler: Scheduler) -> None:
        for op in ADMIN_HANDLERS:
            if op in scheduler.handlers:
                scheduler.handlers[op] = self._guard(op, scheduler.handlers[op])
        for op in ADMIN_STREAM_HANDLERS:
            if op in scheduler.stream_handlers:
                scheduler.stream_handlers[op] = self._guard_stream(
                    op, scheduler.stream_handlers[op]
                )
        scheduler.handlers["scatter"] = self._scatter(scheduler.handlers["scatter"])

    def _guard(self, op: str, handler: Any) -> Any:
        wants_comm = _expects_comm(handler)

        async def guarded(comm: Any, **kwargs: Any) -> Any:
            reason = self._refusal(identity(comm.extra_info.get("peercert")))
            if reason is not None:
                logger.info("Refused %r: %s", op, reason)
                raise PermissionError(f"{op!r} is an admin operation: {reason}")
            result = handler(comm, **kwargs) if wants_comm else handler(**kwargs)
            return await result if inspect.isawaitable(result) else result

        return same_arguments(guarded, handler)

    def _guard_stream(self, op: str, handler: Any) -> Any:
        def guarded(client: str | None = None, **kwargs: Any) -> Any:
            reason = self._refusal(self.state.client_identity.get(client))
            if reason is not None:
                logger.info("Refused %r of client %s: %s", op, client, reason)
                return None
            return handler(client=client, **kwargs)

        return guarded

    def _scatter(self, handler: Any) -> Any:
        async def scatter(comm: Any, workers: Any = None, **kwargs: Any) -> Any:
            who = principal(identity(comm.extra_info.get("peercert")))
            grants = self.state.grants
            if grants.enabled and not (who or "").startswith(("hub:", "site:")):
                scheduler = self.state.scheduler
                candidates = list(workers) if workers is not None else list(scheduler.workers)
                sites = {a: site_of(ws.resources) for a in candidates
                         if (ws := scheduler.workers.get(a)) is not None}
                denied = sorted({s for s in sites.values() if not grants.allows_site(who, s)})
                if workers is not None and denied:
                    raise PermissionError(
                        f"{'user ' + repr(who) if who else 'an anonymous client'} holds no "
                        f"grant at site(s) {denied}, so cannot place data there; ask the hub "
                        "operator for a grant"
                    )
                workers = [a for a, s in sites.items() if grants.allows_site(who, s)]
                if not workers:
                    raise PermissionError(
                        f"{'user ' + repr(who) if who else 'an anonymous client'} holds no "
                        "grant at any site, so cannot place data anywhere"
                    )
            return await handler(workers=workers, **kwargs)

        return scatter
