"""Site sessions held open as connections, so the hub knows at once when a site dies.

A site process heartbeats the hub, and a registration without heartbeats lapses after
:data:`~.state.SESSION_EXPIRY`. A site killed (crash, ``kill -9``) and restarted within
that time would find its own name taken. So each site process also holds one connection
open for its whole life (``federation_site_session``); when that connection closes the
session ends at once, and a restart under the same name replaces the dead registration.
Only a *live* registration blocks a name.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from distributed.comm import CommClosedError
from distributed.core import Status

from federation.protocol import SITE_SESSION

from .plugin import FederationPlugin

if TYPE_CHECKING:
    from distributed.comm import Comm
    from distributed.scheduler import Scheduler

logger = logging.getLogger(__name__)


class SessionPlugin(FederationPlugin):
    """Ends a site session when the site's session connection closes."""

    name = "federation-sessions"

    async def start(self, scheduler: Scheduler) -> None:
        scheduler.handlers[SITE_SESSION] = self.hold

    async def hold(self, comm: Comm, site: str, session: str) -> Any:
        """Acknowledge, then wait until the connection closes and end the session.

        Answers ``{"status": "unknown"}`` (and returns) for a session the hub does not
        know: the site registers again first (after a hub restart).
        """
        record = self.state.sites.get(site)
        if record is None or session not in record.sessions:
            return {"status": "unknown"}
        await comm.write({"status": "OK"})
        try:
            await comm.read()  # the site sends nothing more: this returns when it closes
        except CommClosedError:
            pass
        finally:
            record = self.state.sites.get(site)
            if record is not None and session in record.sessions:
                self.state.unregister(site, session)
                logger.info("Site %s: a site process disconnected (session ended)", site)
                self.state.scheduler.log_event(
                    "federation", {"action": "site-session-closed", "site": site}
                )
        return Status.dont_reply
