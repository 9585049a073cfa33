"""Who may connect to a site's workers and nannies: the hub, and sites — not users.

A user's client talks to the hub; the hub gathers results for it after checking the
egress policies of their lineage. A client that connects to a worker itself
(``client.gather(..., direct=True)``, ``direct_to_workers=True``, ``scatter(direct=True)``,
or its own RPC to a worker or nanny) would skip that check, and on an open site any
pickled payload it sends would be unpickled — run — there. So with TLS a site's
workers and nannies close every connection whose certificate names a user, right
after the handshake and before reading a byte of it. Distributed's client then falls
back to gathering through the hub, so direct gathers still work where the policies
allow. Without TLS peers have no identity and nothing is refused (see the README).
"""

from __future__ import annotations

import logging
from typing import Any

from .security import identity

logger = logging.getLogger("federation.direct")


def refuse_users(server: Any) -> None:
    """Gate every listener of ``server`` (a Worker or Nanny, already listening)."""
    for listener in server.listeners:
        for each in (listener, getattr(listener, "local", None)):  # relay: its local listener
            if each is not None and not getattr(each.comm_handler, "federation_gate", False):
                each.comm_handler = _gated(each.comm_handler)


def _gated(handler: Any) -> Any:
    async def gated(comm: Any) -> None:
        ident = identity(comm.extra_info.get("peercert"))
        if ident is not None and ident[0] == "user":
            logger.info(
                "Closed a direct connection from user %r: users reach sites through the hub",
                ident[1],
            )
            comm.abort()
            return
        await handler(comm)

    gated.federation_gate = True  # type: ignore[attr-defined]
    return gated
