"""Who may call each of the hub's RPC handlers, and the guard that enforces it.

The handlers' names, arguments and answers are in :mod:`federation.protocol`.

The caller is known from the connection, never from a handler's arguments: on a
``tls://`` hub from the peer's certificate (role ``OU`` and name ``CN``, see
:func:`federation.security.identity`); on a ``tcp://`` hub nobody is identified, and a
site proves itself with the secret ``session`` it registered with (workers get it from
their site process, never from the hub).

==============================  =====  ======  =====  =========================================
handler                         user   site    hub    what the caller may name
==============================  =====  ======  =====  =========================================
federation_register_site        –      own     yes    ``site``: its own name; datasets, methods
                                                      as ``site/NAME``, results only as
                                                      ``site/results/NAME`` (never a dataset)
federation_heartbeat            –      own     yes    ``site``: its own name
federation_unregister_site      –      own     yes    ``site``: its own name
federation_add_result           –      own+s   yes    ``site``: its own; ``results/NAME`` only
federation_update_datasets      –      own+s   yes    ``site``: its own; datasets it registered
federation_result_publisher     –      own+s   yes    ``site``: its own; a result task of it
federation_members              –      yes     yes    nothing (the federation's worker list)
federation_relay_reset          –      own     yes    ``site``: its own name
federation_site_session         –      own     yes    ``site``: its own name (held open)
federation_site_demand          –      own     yes    ``site``: its own name
federation_retire_site_workers  –      own     yes    ``site``: its own name; its workers
federation_relay_ticket         yes    yes     yes    a registered endpoint ``site/host:port``
federation_catalog              yes    yes     yes    nothing; the answer is filtered by grants
federation_dataset, _method     yes    yes     yes    any ``site/name`` they hold a grant for
federation_methods              yes    yes     yes    nothing; filtered by grants
federation_provenance           yes    yes     yes    any result they hold a grant for
federation_sites, _traffic      yes    yes     yes    nothing
==============================  =====  ======  =====  =========================================

``own``: a site certificate may name only its own site. ``+s``: the ``session`` argument
must be a live registration of that site (on a ``tcp://`` hub the only proof). A
``federation_*`` handler missing from :data:`TABLE` — one a plugin added without saying
who may call it — is refused to everyone but the hub.

distributed's handlers that dial an address named in their arguments, ``broadcast``
(``client.run``) and ``proxy``, reach only the federation's workers (:data:`DIALS`): the
hub does not connect to arbitrary ``host:port`` for anybody.

distributed's own handlers that the plugins wrap keep distributed's rules (any peer
that completed the TLS handshake): ``gather`` (checked by egress policies),
``rebalance``/``replicate`` (kept within each site), ``register-client`` and
``register-worker`` (their certificates are recorded; a worker whose certificate names
another site than its labels is removed).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from distributed.core import _expects_comm, error_message

from federation import protocol
from federation.security import identity

if TYPE_CHECKING:
    from .state import FederationState

logger = logging.getLogger(__name__)

USER, SITE, HUB = "user", "site", "hub"
ANYONE = frozenset({USER, SITE, HUB})
SITES = frozenset({SITE, HUB})


@dataclass(frozen=True)
class Rule:
    """Who may call one handler."""

    #: certificate roles allowed to call it (the hub's own certificate may call anything)
    roles: frozenset[str]
    #: the argument naming a site; a site certificate may name only itself
    site_arg: str | None = None
    #: the ``session`` argument must be a live registration of that site
    session: bool = False
    #: what calling it does to the named site, for refusals ("register site 'awi'")
    action: str = ""


TABLE: dict[str, Rule] = {
    protocol.REGISTER_SITE: Rule(SITES, "site", action="register"),
    protocol.HEARTBEAT: Rule(SITES, "site", action="keep alive"),
    protocol.UNREGISTER_SITE: Rule(SITES, "site", action="unregister"),
    protocol.ADD_RESULT: Rule(SITES, "site", session=True, action="announce results of"),
    protocol.UPDATE_DATASETS: Rule(
        SITES, "site", session=True, action="announce changed datasets of"
    ),
    protocol.RESULT_PUBLISHER: Rule(
        SITES, "site", session=True, action="store results of"
    ),
    protocol.MEMBERS: Rule(SITES),
    protocol.RELAY_RESET: Rule(SITES, "site", action="reset the relay connections of"),
    protocol.SITE_SESSION: Rule(SITES, "site", action="hold the session of"),
    protocol.SITE_DEMAND: Rule(SITES, "site", action="read the demand for"),
    protocol.RETIRE_SITE_WORKERS: Rule(SITES, "site", action="retire workers of"),
    # the relay names the caller from its connection itself (scheduler_plugins.relay)
    protocol.RELAY_TICKET: Rule(ANYONE),
    protocol.CATALOG: Rule(ANYONE),
    protocol.DATASET: Rule(ANYONE),
    protocol.METHOD: Rule(ANYONE),
    protocol.METHODS: Rule(ANYONE),
    protocol.PROVENANCE: Rule(ANYONE),
    protocol.SITES: Rule(ANYONE),
    protocol.TRAFFIC: Rule(ANYONE),
}

#: handlers nobody declared: only the hub's own certificate may call them
UNDECLARED = Rule(frozenset({HUB}))

#: distributed's handlers that connect to addresses given as this argument
DIALS = {"broadcast": "workers", "proxy": "worker"}


def _who(ident: tuple[str, str] | None) -> str:
    return f"{ident[0]} {ident[1]!r}" if ident else "an unidentified peer"


def authorise(
    state: FederationState, op: str, ident: tuple[str, str] | None, kwargs: dict[str, Any]
) -> None:
    """Raise :class:`PermissionError` unless ``ident`` may call ``op`` with ``kwargs``."""
    rule = TABLE.get(op, UNDECLARED)
    tls = state.scheduler.address.startswith("tls://")
    if tls and (ident is None or ident[0] != HUB):
        allowed = ident is not None and ident[0] in rule.roles
        if rule.site_arg:
            named = kwargs.get(rule.site_arg)
            if not allowed or (ident[0] == SITE and named != ident[1]):
                raise PermissionError(
                    f"the certificate of {_who(ident)} cannot {rule.action} site {named!r}; "
                    "only that site's own certificate can (dask federation certs issue "
                    "--site NAME)"
                )
        elif not allowed:
            who = "sites" if rule.roles == SITES else "the hub"
            raise PermissionError(
                f"{_who(ident)} may not call {op!r}: only {who} may"
                + ("" if op in TABLE else " (it is not in scheduler_plugins/handlers.TABLE)")
            )
    if rule.session:
        site, session = kwargs.get(rule.site_arg or "site"), kwargs.get("session")
        record = state.sites.get(site) if isinstance(site, str) else None
        if record is None or not record.alive() or session not in record.sessions:
            raise PermissionError(
                f"{op!r} for site {site!r} needs the session of a live registration of it"
            )


def same_arguments(wrapper: Callable, handler: Callable) -> Callable:
    """Give ``wrapper(comm, **kwargs)`` the signature of the ``handler`` it calls.

    distributed reads a handler's signature: it passes the comm only to handlers whose
    first parameter is ``comm``, and the caller's ``serializers`` only to handlers that
    name that parameter (``broadcast``, ``gather`` …). A bare ``**kwargs`` wrapper would
    drop them: ``client.run`` of a client without pickle then got pickled replies.
    """
    params = list(inspect.signature(handler).parameters.values())
    if not _expects_comm(handler):
        params.insert(0, inspect.Parameter("comm", inspect.Parameter.POSITIONAL_OR_KEYWORD))
    wrapper.__signature__ = inspect.Signature(params)
    wrapper.__name__ = getattr(handler, "__name__", wrapper.__name__)
    return wrapper


def guard(state: FederationState, op: str, handler: Callable) -> Callable:
    """``handler`` behind :func:`authorise`; a refusal is one warning line, not a traceback."""
    passes_comm = _expects_comm(handler)

    async def guarded(comm, **kwargs: Any) -> Any:
        ident = identity(comm.extra_info.get("peercert"))
        try:
            authorise(state, op, ident, kwargs)
            result = handler(comm, **kwargs) if passes_comm else handler(**kwargs)
            return await result if inspect.isawaitable(result) else result
        except PermissionError as e:  # handlers refuse with it too (e.g. foreign entries)
            logger.warning("Refused %s from %s (%s): %s", op, _who(ident), comm.peer_address, e)
            return error_message(e, status="uncaught-error")  # the caller raises it

    return same_arguments(guarded, handler)


def guard_dials(state: FederationState, op: str, handler: Callable) -> Callable:
    """``handler`` refusing addresses (argument :data:`DIALS` ``[op]``) of no worker."""
    passes_comm = _expects_comm(handler)

    async def checked(comm, **kwargs: Any) -> Any:
        named = kwargs.get(DIALS[op])
        named = [named] if isinstance(named, str) else list(named or ())
        strangers = [a for a in named if a not in state.scheduler.workers]
        if strangers:
            e = PermissionError(
                f"{op!r} reaches only workers of the federation; {', '.join(strangers)} "
                "is not one"
            )
            logger.warning("Refused %s from %s: %s", op, comm.peer_address, e)
            return error_message(e, status="uncaught-error")
        result = handler(comm, **kwargs) if passes_comm else handler(**kwargs)
        return await result if inspect.isawaitable(result) else result

    return same_arguments(checked, handler)


class GuardedHandlers(dict):
    """The scheduler's handler table: ``federation_*`` and :data:`DIALS` handlers come
    out guarded.

    Guarding at lookup covers handlers installed later by any plugin (their ``start``
    runs concurrently with ours) without each plugin having to remember it. Other
    plugins add their own wrappers of ``federation_*`` handlers with :meth:`add_layer`
    (the fair-share rate limit), never by replacing this table — a table built from a
    copy of it would hand out unguarded handlers.
    """

    def __init__(self, handlers: dict[str, Callable], state: FederationState):
        super().__init__(handlers)
        self._state = state
        self._guarded: dict[str, tuple[Callable, Callable]] = {}
        self._layers: list[Callable[[str, Callable], Callable]] = []

    def add_layer(self, wrap: Callable[[str, Callable], Callable]) -> None:
        """Wrap every guarded ``federation_*`` handler with ``wrap(op, guarded)``."""
        self._layers.append(wrap)
        self._guarded.clear()

    def __getitem__(self, op: str) -> Callable:
        handler = super().__getitem__(op)
        if op.startswith(protocol.PREFIX):
            wrap = guard
        elif op in DIALS:
            wrap = guard_dials
        else:
            return handler
        cached = self._guarded.get(op)
        if cached is None or cached[0] is not handler:
            wrapped = wrap(self._state, op, handler)
            if wrap is guard:
                for layer in self._layers:
                    wrapped = layer(op, wrapped)
            cached = self._guarded[op] = (handler, wrapped)
        return cached[1]


def install(state: FederationState) -> None:
    """Guard every ``federation_*`` handler of the state's scheduler."""
    scheduler = state.scheduler
    if not isinstance(scheduler.handlers, GuardedHandlers):
        scheduler.handlers = GuardedHandlers(scheduler.handlers, state)
