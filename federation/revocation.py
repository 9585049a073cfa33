"""Withdrawn certificates: turning revoked peers away from a Dask server, and off it.

The hub reads the CA's revocation list (``crl.pem``, written by ``dask federation certs
revoke``) and re-reads it when the file changes; site workers learn the revoked serial
numbers from the hub (see :mod:`federation.peers`). Both use :func:`gate` to refuse new
connections from revoked certificates right after the TLS handshake, and
:func:`disconnect` to drop the connections such peers already hold.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection

from .security import revoked_serials, serial

logger = logging.getLogger(__name__)


class RevocationList:
    """The serial numbers in a CRL file, re-read when the file changes.

    A file that is missing means nothing is revoked; one that cannot be read or is not
    signed by the CA keeps the previous list (and says so once), so a half-copied file
    never reopens the door.
    """

    def __init__(self, path: str | os.PathLike, ca_file: str | os.PathLike):
        self.path, self.ca_file = str(path), str(ca_file)
        self.serials: frozenset[int] = frozenset()
        self._stamp: tuple[int, int] | None = None
        self.refresh()

    def refresh(self) -> bool:
        """Re-read the file if it changed; whether the list changed."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            serials = revoked_serials(self.path, self.ca_file)
        except (OSError, ValueError) as e:
            logger.error("Keeping the previous revocation list: cannot use %s: %s", self.path, e)
            return False
        changed, self.serials = serials != self.serials, serials
        if changed:
            logger.info("Revocation list %s: %d certificate(s) revoked", self.path, len(serials))
        return changed


def _revoked(comm, serials: Collection[int]) -> bool:
    return serial(comm.extra_info.get("peercert")) in serials


def gate(server, revoked: Callable[[], Collection[int]]) -> None:
    """Refuse connections to ``server`` from certificates in ``revoked()``.

    Wraps each listener's connection handler, which runs after the TLS handshake (when
    the peer's certificate is known) and before any message is read.
    """
    listeners = list(server.listeners)
    # a relay:// listener also accepts site-internal connections on a local listener
    listeners += [lst.local for lst in server.listeners if getattr(lst, "local", None)]
    for listener in listeners:
        if not hasattr(listener, "comm_handler"):
            continue
        handler = listener.comm_handler

        async def checked(comm, handler=handler) -> None:
            if _revoked(comm, revoked()):
                logger.warning("Refused %s: its certificate is revoked", comm.peer_address)
                comm.abort()
                return
            await handler(comm)

        listener.comm_handler = checked


def disconnect(server, serials: Collection[int]) -> int:
    """Abort ``server``'s open connections from revoked certificates; how many.

    A client's or worker's long-lived stream is one of them, so the scheduler sees the
    client or worker leave, as if it had lost its network.
    """
    cut = 0
    for comm in list(server._comms):
        if not comm.closed() and _revoked(comm, serials):
            logger.warning("Disconnecting %s: its certificate was revoked", comm.peer_address)
            comm.abort()
            cut += 1
    return cut
