"""Site workers dial only peers: workers the hub lists as members of the federation.

A worker's ``gather`` handler makes it fetch keys from whatever addresses the caller
names — distributed's scheduler uses it to rebalance and replicate, but anybody who
reaches the worker (through the relay, or inside an institute) could use it to make a
worker connect to an arbitrary ``host:port`` behind the institute's firewall. With
:class:`PeersPlugin` (on every site worker unless ``federation.peers-only`` is false)
a ``gather`` naming an address that is not a federation worker is refused before any
connection is made. So is a fetch the scheduler orders (the ``who_has`` of a
``compute-task`` or ``acquire-replicas``, which the worker's state machine turns into
``gather_dep``): if the hub, or anyone speaking as it, names a stranger as a holder of an
input, the input fails with the refusal (so the task that needs it does) instead of the
worker dialling out.

The member list comes from the hub (``federation_members``, see
:mod:`scheduler_plugins.members`), refreshed every ``federation.revocation.interval``
(2 s) and, when a caller names an unknown address (a worker that just joined), once
more before refusing, with a request sent after the call arrived (at most once a
second). The same reply carries the revoked certificates, which the worker refuses and
disconnects (:mod:`federation.revocation`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from typing import Any

import dask
from dask.utils import parse_timedelta
from distributed import WorkerPlugin
from distributed.core import error_message
from distributed.worker_state_machine import GatherDepFailureEvent, StateMachineEvent
from tornado.ioloop import PeriodicCallback

from .protocol import MEMBERS, call
from .revocation import disconnect, gate

logger = logging.getLogger(__name__)

#: an unknown address makes the worker ask the hub again, but not more often than this (s)
REFRESH_MIN_INTERVAL = 1.0


class PeersPlugin(WorkerPlugin):
    """Checks ``gather`` targets and the peers the worker fetches inputs from against the
    hub's worker list; refuses revoked peers."""

    name = "federation-peers"

    def __init__(self, site: str):
        self.site = site
        self.members: frozenset[str] = frozenset()
        self.revoked: frozenset[int] = frozenset()
        self._asked = 0.0
        self._refreshing: asyncio.Future | None = None
        self.worker = None

    def __getstate__(self) -> dict[str, Any]:
        return {"site": self.site}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    async def setup(self, worker) -> None:
        self.worker = worker
        gate(worker, lambda: self.revoked)
        if dask.config.get("federation.peers-only"):
            original = worker.handlers["gather"]

            async def gather(who_has: dict) -> dict:
                refusal = await self.check({a for addrs in who_has.values() for a in addrs})
                if refusal is not None:
                    return error_message(refusal, status="uncaught-error")
                return await original(who_has=who_has)

            worker.handlers["gather"] = gather
            fetch = worker.gather_dep

            async def gather_dep(
                peer: str, to_gather: Collection, total_nbytes: int, *, stimulus_id: str
            ) -> StateMachineEvent:
                refusal = await self.check({peer})
                if refusal is not None:
                    return GatherDepFailureEvent.from_exception(
                        refusal, worker=peer, total_nbytes=total_nbytes,
                        stimulus_id=f"federation-peers-refused-{time.time()}",
                    )
                return await fetch(peer, to_gather, total_nbytes, stimulus_id=stimulus_id)

            # the state machine's fetches run through this attribute (BaseWorker)
            worker.gather_dep = gather_dep
        interval = parse_timedelta(dask.config.get("federation.revocation.interval"))
        poll = PeriodicCallback(self.refresh, interval * 1000)
        worker.periodic_callbacks["federation-peers"] = poll
        poll.start()

    async def refresh(self) -> None:
        """Ask the hub for its workers and revoked certificates; keep the last on failure.

        Concurrent callers share one request (a check waits for the answer an earlier
        check already asked for, instead of refusing on the old list)."""
        if self._refreshing is None:
            self._asked = time.monotonic()
            self._refreshing = asyncio.ensure_future(self._ask())
        refreshing = self._refreshing
        try:
            await asyncio.shield(refreshing)
        finally:
            if self._refreshing is refreshing and refreshing.done():
                self._refreshing = None

    async def _ask(self) -> None:
        try:
            reply = await call(self.worker.scheduler, MEMBERS)
        except Exception as e:  # the hub may be restarting: keep what we know
            logger.debug("Could not refresh federation members: %s", e)
            return
        self.members = frozenset(reply["workers"])
        revoked = frozenset(int(s, 16) for s in reply["revoked"])
        if revoked != self.revoked:
            self.revoked = revoked
            disconnect(self.worker, revoked)

    async def _members_since(self, since: float) -> None:
        """Refresh until the member list answers a request sent after ``since``
        (monotonic seconds), asking no more often than :data:`REFRESH_MIN_INTERVAL`.

        A worker that joined after the last answer is named in a ``compute-task`` only
        after the hub added it, so a request sent after that message arrived lists it;
        an older answer (the periodic refresh just before) does not, and refusing on it
        would fail the input for good (the state machine errs a refused fetch)."""
        while self._asked < since:
            if self._refreshing is None:
                wait = REFRESH_MIN_INTERVAL - (time.monotonic() - self._asked)
                if wait > 0:
                    await asyncio.sleep(wait)
                    if self._asked >= since:  # another check asked meanwhile
                        break
            await self.refresh()

    async def check(self, targets: set[str]) -> PermissionError | None:
        """``None`` if every target is a federation worker, else the refusal."""
        since = time.monotonic()
        strangers = targets - self.members - {self.worker.address}
        if strangers:
            await self._members_since(since)
            strangers = targets - self.members - {self.worker.address}
        if not strangers:
            return None
        refusal = PermissionError(
            f"a worker of site {self.site!r} fetches data only from workers of the federation; "
            f"{', '.join(sorted(strangers))} is not one (federation.peers-only)"
        )
        logger.warning("Refused a fetch: %s", refusal)
        return refusal
