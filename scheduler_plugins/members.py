"""Who belongs to the federation: its workers, and the certificates withdrawn from it.

``federation_members()`` (sites and the hub only, see :mod:`.handlers`) answers
``{"workers": [address, ...], "revoked": [serial as hex, ...]}``: the site workers the
hub knows, which are the only peers a site worker dials (see :mod:`federation.peers`),
and the revoked certificates the workers refuse.

Every ``federation.revocation.interval`` (2 s) the hub re-reads its revocation list —
``federation.tls.crl`` (``--tls-crl``), by default ``crl.pem`` beside its CA file — and
disconnects peers whose certificates it names; new connections from them end right
after the handshake. It re-reads the grants in its settings file (``--config``) too, so
taking a user out of ``grants:`` takes effect without a restart.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import dask
import yaml
from dask.utils import parse_timedelta
from tornado.ioloop import PeriodicCallback

from federation.protocol import MEMBERS, Members
from federation.revocation import RevocationList, disconnect, gate

from .plugin import FederationPlugin
from .state import FederationState

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler

logger = logging.getLogger(__name__)


class MembersPlugin(FederationPlugin):
    """Serves the member list; keeps revocations and grants current."""

    name = "federation-members"

    def __init__(self, state: FederationState):
        self.state = state
        self.crl: RevocationList | None = None
        self.settings_file: str | None = None
        self._settings_stamp: float | None = None

    async def start(self, scheduler: Scheduler) -> None:
        scheduler.handlers[MEMBERS] = self.members
        ca_file = scheduler.security.tls_ca_file
        if ca_file:
            path = dask.config.get("federation.tls.crl") or os.path.join(
                os.path.dirname(os.path.abspath(ca_file)), "crl.pem"
            )
            self.crl = RevocationList(path, ca_file)
            gate(scheduler, lambda: self.crl.serials)
        self.settings_file = dask.config.get("federation.settings-file")
        if self.settings_file:
            self._settings_stamp = os.stat(self.settings_file).st_mtime
        interval = parse_timedelta(dask.config.get("federation.revocation.interval"))
        poll = PeriodicCallback(self.refresh, interval * 1000)
        scheduler.periodic_callbacks["federation-members"] = poll
        poll.start()

    def members(self) -> dict[str, Any]:
        revoked = self.crl.serials if self.crl else ()
        return Members(
            workers=sorted(self.state.members()),
            revoked=[format(s, "x") for s in sorted(revoked)],
        ).model_dump(mode="json")

    def refresh(self) -> None:
        """Apply a changed revocation list or settings file."""
        if self.crl is not None and self.crl.refresh():
            cut = disconnect(self.state.scheduler, self.crl.serials)
            sites = self.state.drop_sessions(self.crl.serials)
            self.state.scheduler.log_event(
                "federation", {"action": "revocations", "revoked": len(self.crl.serials),
                               "disconnected": cut, "sites": sites},
            )
        if self.settings_file:
            self._reload_grants()

    def _reload_grants(self) -> None:
        try:
            stamp = os.stat(self.settings_file).st_mtime
            if stamp == self._settings_stamp:
                return
            self._settings_stamp = stamp
            with open(self.settings_file) as f:
                settings = yaml.safe_load(f) or {}
            grants = settings.get("grants")
            if grants is not None and not isinstance(grants, dict):
                raise ValueError("'grants:' must map identities to lists of patterns")
        except (OSError, ValueError, AttributeError, yaml.YAMLError) as e:
            logger.error("Keeping the current grants: cannot read %s: %s", self.settings_file, e)
            return
        if grants != self.state.grants.grants:
            self.state.grants.grants = grants
            logger.info("Grants reloaded from %s", self.settings_file)
