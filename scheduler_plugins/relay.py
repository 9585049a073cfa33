"""The relay beside the hub: connects everybody to outbound-only sites.

Outbound-only sites keep a control connection open to this relay for each of their
listeners (workers, nannies; see :mod:`federation.relay`). A peer that wants such an
endpoint first asks the hub for a one-time **ticket** (RPC ``federation_relay_ticket``
over its own connection to the hub, so the hub knows who asks: the certificate with TLS,
a site's relay token without), then connects here with the ticket. The relay asks the
endpoint, over its control connection, to dial back with another one-time token and
splices the two connections. After the one JSON line that opens a connection the relay
only copies bytes — in the kernel, with ``os.splice`` (:mod:`.splice`) — counting them
per (from, to), both ends named by the hub (the ticket's holder, the endpoint's
registered site), never by the peer.

Nothing a peer sends before it has authenticated (a ticket, a site's certificate and
token, a dial-back token) costs more than one bounded line and a few seconds: a peer may
hold at most ``federation.relay.max-pending-per-peer`` such connections (per IP address),
all peers together ``max-pending``, each for ``handshake-timeout``; more are closed at
once. Authenticated connections are limited per site (``max-connections-per-site``,
``max-endpoints-per-site``) and per ticket holder (``max-connections-per-peer``).
Refusals are logged at most once a minute per kind (:class:`QuietLog`).

It listens on ``federation.relay.port`` (``dask federation hub --relay-port``, 8789 by
default there; any free port when the config does not say) on the scheduler's host; sites
learn the port from the reply to their registration.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import secrets
import socket
import ssl
import time
from collections import Counter
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import dask
from distributed.comm import get_address_host

from federation import relay as relay_comm
from federation.protocol import (
    RELAY_ACCEPT,
    RELAY_CONNECT,
    RELAY_MAX_LINE,
    RELAY_REGISTER,
    RELAY_RESET,
    RELAY_STARTTLS,
    RELAY_TICKET,
    RelayAccess,
    read_relay_line,
    relay_line,
    relay_reply,
    site_of_ref,
)
from federation.security import identity

from .plugin import FederationPlugin
from .quietlog import QuietLog
from .splice import Splice

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler

    from .state import FederationState

logger = logging.getLogger(__name__)

#: how long a connect waits for the endpoint to dial back: less than the connector
#: waits for our answer, so it hears why instead of timing out
DIAL_TIMEOUT = relay_comm.DIAL_TIMEOUT - 5

def setting(key: str) -> Any:
    """``federation.relay.<key>`` from the hub's dask config (defaults: federation.yaml)."""
    return dask.config.get(f"federation.relay.{key}")


class RelayRefused(PermissionError):
    """A ticket request the relay refuses (the message says why and what to do)."""


class RelayServer:
    """Endpoints registered by outbound-only sites, and the splicing of connections."""

    def __init__(self) -> None:
        #: site -> secret a site presents to register endpoints and to ask for tickets
        #: without TLS (issued at registration)
        self.tokens: dict[str, str] = {}
        #: "site/host:port" -> control connection writer
        self.endpoints: dict[str, asyncio.StreamWriter] = {}
        #: dial-back token -> future of the endpoint's connection
        self.pending: dict[str, asyncio.Future] = {}
        #: ticket -> (holder, origin, target, expiry in monotonic s)
        self.tickets: dict[str, tuple[str, str, str, float]] = {}
        #: (from, to) -> bytes carried; from/to are site names, or "hub"/"client"
        self.carried: Counter[tuple[str, str]] = Counter()
        #: the hub's server-side TLS context: control connections must use mutual TLS
        self.ssl: ssl.SSLContext | None = None
        self.server: asyncio.base_events.Server | None = None
        #: site -> its relayed connections being copied
        self._spliced: dict[str, set[Splice]] = {}
        #: unauthenticated connections per peer IP
        self._unauthenticated: Counter[str] = Counter()
        #: spliced connections per ticket holder
        self._holders: Counter[str] = Counter()
        self.quiet = QuietLog(logger)

    async def start(self, host: str | None, port: int) -> int:
        self.server = await asyncio.start_server(self._handle, host, port, limit=RELAY_MAX_LINE)
        return self.server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in self.endpoints.values():
            writer.close()
        for splices in self._spliced.values():
            for splice in list(splices):
                splice.close()

    def token_for(self, site: str) -> str:
        return self.tokens.setdefault(site, secrets.token_urlsafe(24))

    def reset(self, site: str) -> int:
        """Cut every relayed connection of ``site`` (its listeners reconnect)."""
        writers = [w for ep, w in self.endpoints.items() if ep.startswith(f"{site}/")]
        for writer in writers:
            writer.transport.abort()
        splices = list(self._spliced.get(site, ()))
        for splice in splices:
            splice.close()
        return len(writers) + len(splices)

    def issue(self, holder: str, origin: str, target: str) -> str:
        """A one-time ticket for ``holder`` (an identity, for limits) to connect to
        ``target``, counted as coming from ``origin``.

        Raises :class:`RelayRefused` if ``target`` is not a registered endpoint (the
        relay connects only to listeners of registered sites) or the holder has too many
        unused tickets or connections.
        """
        now = time.monotonic()
        for key in [k for k, t in self.tickets.items() if t[3] < now]:
            del self.tickets[key]
        if target not in self.endpoints:
            raise RelayRefused(
                f"endpoint {target!r} is not connected to the relay; only workers and "
                "nannies of registered outbound-only sites are reached through it"
            )
        unused = sum(1 for t in self.tickets.values() if t[0] == holder)
        limit = setting("max-pending-per-peer")
        if unused >= limit or self._holders[holder] >= setting("max-connections-per-peer"):
            self.quiet.log(logging.WARNING, "ticket-limit", "Relay refuses tickets to %s: "
                           "%d unused, %d connected", holder, unused, self._holders[holder])
            raise RelayRefused(
                f"{holder} holds too many relay tickets or connections; raise "
                "federation.relay.max-pending-per-peer / max-connections-per-peer at the hub"
            )
        ticket = secrets.token_urlsafe(18)
        self.tickets[ticket] = (holder, origin, target, now + 2 * setting("handshake-timeout"))
        return ticket

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if peer else "?"
        if (
            self._unauthenticated[ip] >= setting("max-pending-per-peer")
            or sum(self._unauthenticated.values()) >= setting("max-pending")
        ):
            self.quiet.log(logging.WARNING, "pending-limit", "Relay closes new connections "
                           "from %s: %d unauthenticated from there, %d in all", ip,
                           self._unauthenticated[ip], sum(self._unauthenticated.values()))
            writer.transport.abort()
            return
        self._unauthenticated[ip] += 1
        try:
            try:
                session = await asyncio.wait_for(
                    self._opening(reader, writer), setting("handshake-timeout")
                )
            finally:
                self._unauthenticated[ip] -= 1
                if not self._unauthenticated[ip]:
                    del self._unauthenticated[ip]
            if session is not None:
                await session
        except (OSError, ValueError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            self.quiet.log(logging.INFO, type(e).__name__, "Relay connection from %s ended: "
                           "%r", ip, e)
            writer.transport.abort()

    async def _opening(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Awaitable[None] | None:
        """Read and authenticate the opening of a connection; returns what serves it."""
        msg = await _read_line(reader)
        op = msg.get("op")
        if op == RELAY_STARTTLS:  # a control connection: mutual TLS, then the registration
            if self.ssl is None:
                await _reply(writer, "this relay runs without TLS")
                writer.close()
                return None
            await _reply(writer)
            await writer.start_tls(self.ssl)
            msg = await _read_line(reader)
            if msg.get("op") != RELAY_REGISTER:
                raise ValueError("only a registration may follow starttls")
            return await self._register(msg, reader, writer)
        if op == RELAY_REGISTER:
            return await self._register(msg, reader, writer)
        if op == RELAY_CONNECT:
            return await self._connect(msg, reader, writer)
        if op == RELAY_ACCEPT:
            future = self.pending.pop(str(msg.get("token", "")), None)
            if future is None or future.done():
                writer.transport.abort()
            else:
                future.set_result((reader, writer))  # the connector's task splices it
            return None
        raise ValueError(f"unknown relay op {str(op)[:40]!r}")

    async def _register(
        self, msg: dict, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Awaitable[None] | None:
        endpoint = str(msg.get("endpoint", ""))
        site = site_of_ref(endpoint)
        error = None
        if self.ssl is not None:
            who = identity(writer.get_extra_info("peercert"))
            if who != ("site", site):
                error = (f"endpoints of site {site!r} register with that site's certificate, "
                         f"not {who}")
        expected = self.tokens.get(site)
        if error is None and (
            expected is None or not secrets.compare_digest(expected, str(msg.get("token")))
        ):
            error = f"site {site!r} has no valid relay token; it must register with the hub first"
        if error is None and endpoint not in self.endpoints and sum(
            1 for ep in self.endpoints if ep.startswith(f"{site}/")
        ) >= setting("max-endpoints-per-site"):
            error = (f"site {site!r} has too many endpoints at the relay; raise "
                     "federation.relay.max-endpoints-per-site at the hub")
        if error is not None:
            self.quiet.log(logging.WARNING, "register-refused", "Relay refused an endpoint: %s",
                           error)
            await _reply(writer, error)
            writer.close()
            return None
        old = self.endpoints.get(endpoint)
        if old is not None:
            old.close()
        self.endpoints[endpoint] = writer
        await _reply(writer)
        logger.info("Relay endpoint %s registered", endpoint)
        return self._control(endpoint, reader, writer)

    async def _control(
        self, endpoint: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            await reader.read()  # until the site closes it; nothing else is sent our way
        finally:
            if self.endpoints.get(endpoint) is writer:
                del self.endpoints[endpoint]
            writer.close()

    async def _connect(
        self, msg: dict, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Awaitable[None] | None:
        ticket = self.tickets.pop(str(msg.get("ticket", "")), None)
        if ticket is None or ticket[3] < time.monotonic():
            self.quiet.log(logging.WARNING, "no-ticket", "Relay refused a connect without a "
                           "valid ticket from %s", writer.get_extra_info("peername"))
            await _reply(writer, (
                "a relayed connection needs a ticket from the hub (federation_relay_ticket); "
                "this one is missing, used or expired"
            ))
            writer.close()
            return None
        holder, origin, target, _ = ticket
        site = site_of_ref(target)
        if len(self._spliced.get(site, ())) >= setting("max-connections-per-site"):
            self.quiet.log(logging.WARNING, "site-limit", "Relay refused a connection to "
                           "%s: the site has %d relayed connections", site,
                           len(self._spliced[site]))
            await _reply(writer, (
                f"site {site!r} has too many relayed connections; raise "
                "federation.relay.max-connections-per-site at the hub"
            ))
            writer.close()
            return None
        return self._splice(holder, origin, target, reader, writer)

    async def _splice(
        self, holder: str, origin: str, target: str,
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
    ) -> None:
        control = self.endpoints.get(target)
        token = secrets.token_urlsafe(18)
        future = asyncio.get_running_loop().create_future()
        self.pending[token] = future
        try:
            if control is None:
                raise OSError("endpoint gone")
            control.write(relay_line(token=token, **{"from": origin}))
            await control.drain()
            peer_reader, peer_writer = await asyncio.wait_for(future, DIAL_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            self.pending.pop(token, None)
            await _reply(writer, f"endpoint {target!r} did not dial back")
            writer.close()
            return
        await _reply(writer)
        try:
            sock, prefix = await _take_over(reader, writer)
            try:
                peer_sock, peer_prefix = await _take_over(peer_reader, peer_writer)
            except BaseException:
                sock.close()
                raise
        except BaseException:
            peer_writer.transport.abort()
            raise
        site = site_of_ref(target)
        forward, back = (origin, site), (site, origin)

        def count_forward(n: int) -> None:
            self.carried[forward] += n

        def count_back(n: int) -> None:
            self.carried[back] += n

        splice = Splice(sock, peer_sock, prefix, peer_prefix, count_forward, count_back)
        spliced = self._spliced.setdefault(site, set())
        spliced.add(splice)
        self._holders[holder] += 1
        try:
            await splice.run()
        finally:
            splice.close()
            spliced.discard(splice)
            self._holders[holder] -= 1
            if not self._holders[holder]:
                del self._holders[holder]


async def _read_line(reader: asyncio.StreamReader) -> dict:
    """One JSON object on one line (at most :data:`RELAY_MAX_LINE` bytes)."""
    return read_relay_line(await reader.readline())


async def _reply(writer: asyncio.StreamWriter, error: str | None = None) -> None:
    """Answer an opening: go ahead, or the ``error`` that refuses it."""
    writer.write(relay_reply(error))
    await writer.drain()


async def _take_over(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[socket.socket, bytes]:
    """The connection's socket, taken from asyncio's transport once our replies are sent,
    and the bytes its reader already holds (the peer may speak right after its line)."""
    transport = writer.transport
    transport.pause_reading()
    transport.set_write_buffer_limits(high=0)  # drain() returns once all is sent
    await writer.drain()
    sock = socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))
    sock.setblocking(False)
    # asyncio has no public way to take back what a StreamReader buffered
    prefix = bytes(reader._buffer)
    transport.abort()  # closes asyncio's descriptor; the duplicate keeps the connection
    return sock, prefix


def _raise_fd_limit() -> None:
    """Relayed connections take two descriptors each: use the hard limit, not the soft."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class RelayPlugin(FederationPlugin):
    """Runs the :class:`RelayServer` in the hub's event loop."""

    name = "federation-relay"

    def __init__(self, state: FederationState):
        self.state = state
        self.relay = RelayServer()
        #: the port it listens on, once started
        self.port: int | None = None

    def access(self, site: str) -> RelayAccess:
        """Where and with which token ``site`` reaches the relay (for its registration)."""
        # behind a NodePort or proxy, sites reach the relay on another port
        port = dask.config.get("federation.relay.public-port") or self.port
        return RelayAccess(port=port, token=self.relay.token_for(site))

    def relayed_bytes(self, site: str) -> int:
        """Bytes carried to and from ``site`` since the hub started."""
        return sum(n for (a, b), n in self.relay.carried.items() if site in (a, b))

    async def start(self, scheduler: Scheduler) -> None:
        """Listen beside the scheduler; install ``federation_relay_ticket`` and
        ``federation_relay_reset``."""
        ctx = scheduler.security.get_listen_args("scheduler").get("ssl_context")
        self.relay.ssl = ctx if isinstance(ctx, ssl.SSLContext) else None
        port = int(dask.config.get("federation.relay.port"))
        host = None if scheduler.ip in ("", "0.0.0.0", "::") else scheduler.ip
        _raise_fd_limit()
        try:
            self.port = await self.relay.start(host, port)
        except OSError as e:  # the hub keeps running; outbound-only sites learn the port
            self.port = await self.relay.start(host, 0)
            logger.error("Relay port %d is not available (%s); listening on %d instead",
                         port, e, self.port)
        # the hub's own connections to relayed workers take their tickets here directly
        for p in {self.port, dask.config.get("federation.relay.public-port")}:
            if p:
                relay_comm.LOCAL_TICKETS[int(p)] = self._hub_ticket
        scheduler.handlers[RELAY_RESET] = self.reset
        scheduler.handlers[RELAY_TICKET] = self.ticket
        logger.info("Relay for outbound-only sites on port %d", self.port)

    async def close(self) -> None:
        for port in [p for p, f in relay_comm.LOCAL_TICKETS.items() if f == self._hub_ticket]:
            del relay_comm.LOCAL_TICKETS[port]
        self.relay.stop()

    def _hub_ticket(self, target: str) -> str:
        return self.relay.issue("hub", "hub", target)

    def _tls(self) -> bool:
        return self.state.scheduler.address.startswith("tls://")

    def ticket(
        self, comm, target: str, site: str | None = None, token: str | None = None
    ) -> str:
        """A one-time ticket to connect to the relayed endpoint ``target``.

        The caller is named from its connection: its certificate with TLS (a site's
        workers count as that site, users as ``client``); without TLS only a site's relay
        token (given in the reply to its registration) makes it that site.
        """
        if self._tls():
            who = identity(comm.extra_info.get("peercert"))
            if who is None:
                raise RelayRefused("relayed connections need a federation certificate")
            origin = {"site": who[1], "hub": "hub"}.get(who[0], "client")
            holder = f"{who[0]}:{who[1]}"
        else:
            known = self.relay.tokens.get(str(site))
            valid = known is not None and secrets.compare_digest(known, str(token))
            origin = str(site) if valid else "client"
            holder = f"site:{site}" if valid else f"client:{get_address_host(comm.peer_address)}"
        return self.relay.issue(holder, origin, str(target))

    def reset(self, comm, site: str) -> dict[str, int]:
        """Cut a site's relayed connections (an operator's reset, and the recovery tests)."""
        who = identity(comm.extra_info.get("peercert"))
        if self._tls() and (who is None or who[0] not in ("hub", "site")):
            raise PermissionError("only the hub or a site may reset relay connections")
        return {"cut": self.relay.reset(site)}
