"""The relay beside the hub: connects everybody to outbound-only sites.

Outbound-only sites keep a control connection open to this relay for each of their
listeners (workers, nannies; see :mod:`federation.relay`). A peer that wants such an
endpoint connects here and names it; the relay asks the endpoint, over its control
connection, to dial back with a one-time token and then splices the two connections.
After the one JSON line that opens a connection the relay only copies bytes, counting
them per (from site, to site) for the dashboard and the HTTP API.

It listens on ``federation.relay.port`` (``dask federation hub --relay-port``, 8789 by
default there; any free port when the config does not say) on the scheduler's host; sites
learn the port from the reply to their registration.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import ssl
from collections import Counter
from typing import TYPE_CHECKING, Any

import dask
from distributed.diagnostics.plugin import SchedulerPlugin

from federation.relay import DIAL_TIMEOUT as CONNECTOR_TIMEOUT
from federation.security import identity

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler

    from .state import FederationState

logger = logging.getLogger(__name__)

#: how long a connect waits for the endpoint to dial back: less than the connector
#: waits for our answer, so it hears why instead of timing out
DIAL_TIMEOUT = CONNECTOR_TIMEOUT - 5
CHUNK = 256 * 1024


class RelayServer:
    """Endpoints registered by outbound-only sites, and the splicing of connections."""

    def __init__(self) -> None:
        #: site -> secret a site's listeners present to register (issued at registration)
        self.tokens: dict[str, str] = {}
        #: "site/host:port" -> control connection writer
        self.endpoints: dict[str, asyncio.StreamWriter] = {}
        self.pending: dict[str, asyncio.Future] = {}
        #: (from, to) -> bytes carried; from/to are site names, or "hub"/"client"
        self.carried: Counter[tuple[str, str]] = Counter()
        #: the hub's server-side TLS context: control connections must use mutual TLS
        self.ssl: ssl.SSLContext | None = None
        self.server: asyncio.base_events.Server | None = None
        self._spliced: dict[str, set[asyncio.StreamWriter]] = {}

    async def start(self, host: str | None, port: int) -> int:
        self.server = await asyncio.start_server(self._handle, host, port, limit=2**16)
        return self.server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        spliced = [w for writers in self._spliced.values() for w in writers]
        for writer in [*self.endpoints.values(), *spliced]:
            writer.close()

    def token_for(self, site: str) -> str:
        return self.tokens.setdefault(site, secrets.token_urlsafe(24))

    def reset(self, site: str) -> int:
        """Cut every relayed connection of ``site`` (its listeners reconnect)."""
        writers = [w for ep, w in self.endpoints.items() if ep.startswith(f"{site}/")]
        writers += list(self._spliced.get(site, ()))
        for writer in writers:
            writer.transport.abort()
        return len(writers)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            msg = json.loads(await asyncio.wait_for(reader.readline(), DIAL_TIMEOUT))
            op = msg.get("op")
            if op == "register":
                await self._register(msg, reader, writer)
            elif op == "starttls":
                await self._starttls(reader, writer)
            elif op == "connect":
                await self._connect(msg, reader, writer)
            elif op == "accept":
                future = self.pending.pop(msg.get("token", ""), None)
                if future is None or future.done():
                    writer.close()
                else:
                    future.set_result((reader, writer))
                return  # the connector's task splices it
            else:
                raise ValueError(f"unknown relay op {op!r}")
        except (OSError, ValueError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            logger.info("Relay connection ended: %r", e)
            writer.close()

    async def _starttls(self, reader, writer: asyncio.StreamWriter) -> None:
        """Upgrade a control connection to mutual TLS, then read its registration."""
        if self.ssl is None:
            await _reply(writer, ok=False, error="this relay runs without TLS")
            writer.close()
            return
        await _reply(writer, ok=True)
        await writer.start_tls(self.ssl)
        msg = json.loads(await asyncio.wait_for(reader.readline(), DIAL_TIMEOUT))
        if msg.get("op") != "register":
            raise ValueError("only a registration may follow starttls")
        await self._register(msg, reader, writer)

    async def _register(self, msg: dict, reader, writer: asyncio.StreamWriter) -> None:
        endpoint = str(msg.get("endpoint", ""))
        site = endpoint.split("/", 1)[0]
        if self.ssl is not None:
            who = identity(writer.get_extra_info("peercert"))
            if who != ("site", site):
                await _reply(writer, ok=False, error=(
                    f"endpoints of site {site!r} register with that site's certificate, "
                    f"not {who}"
                ))
                writer.close()
                return
        expected = self.tokens.get(site)
        if expected is None or not secrets.compare_digest(expected, str(msg.get("token"))):
            await _reply(writer, ok=False, error=(
                f"site {site!r} has no valid relay token; it must register with the hub first"
            ))
            writer.close()
            return
        old = self.endpoints.get(endpoint)
        if old is not None:
            old.close()
        self.endpoints[endpoint] = writer
        await _reply(writer, ok=True)
        logger.info("Relay endpoint %s registered", endpoint)
        try:
            await reader.read()  # until the site closes it; nothing else is sent our way
        finally:
            if self.endpoints.get(endpoint) is writer:
                del self.endpoints[endpoint]
            writer.close()

    async def _connect(self, msg: dict, reader, writer: asyncio.StreamWriter) -> None:
        target = str(msg.get("target", ""))
        origin = str(msg.get("from") or "client")
        control = self.endpoints.get(target)
        if control is None:
            known = sorted(self.endpoints) or ["none"]
            await _reply(writer, ok=False, error=(
                f"endpoint {target!r} is not connected to the relay (connected: "
                f"{', '.join(known)})"
            ))
            writer.close()
            return
        token = secrets.token_urlsafe(18)
        future = asyncio.get_running_loop().create_future()
        self.pending[token] = future
        try:
            control.write(json.dumps({"token": token, "from": origin}).encode() + b"\n")
            await control.drain()
            peer_reader, peer_writer = await asyncio.wait_for(future, DIAL_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            self.pending.pop(token, None)
            await _reply(writer, ok=False, error=f"endpoint {target!r} did not dial back")
            writer.close()
            return
        await _reply(writer, ok=True)
        site = target.split("/", 1)[0]
        spliced = self._spliced.setdefault(site, set())
        spliced.update((writer, peer_writer))
        try:
            await asyncio.gather(
                self._pump(reader, peer_writer, (origin, site)),
                self._pump(peer_reader, writer, (site, origin)),
            )
        finally:
            spliced.difference_update((writer, peer_writer))

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: tuple[str, str]
    ) -> None:
        try:
            while data := await reader.read(CHUNK):
                writer.write(data)
                self.carried[pair] += len(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            # one direction ended: end both, as a direct TCP connection would
            writer.close()


async def _reply(writer: asyncio.StreamWriter, **msg: Any) -> None:
    writer.write(json.dumps(msg).encode() + b"\n")
    await writer.drain()


class RelayPlugin(SchedulerPlugin):
    """Runs the :class:`RelayServer` in the hub's event loop."""

    name = "federation-relay"

    def __init__(self, state: FederationState):
        self.state = state
        self.relay = state.relay

    async def start(self, scheduler: Scheduler) -> None:
        """Listen beside the scheduler; install ``federation_relay_reset``."""
        ctx = scheduler.security.get_listen_args("scheduler").get("ssl_context")
        self.relay.ssl = ctx if isinstance(ctx, ssl.SSLContext) else None
        port = int(dask.config.get("federation.relay.port", 0))
        host = None if scheduler.ip in ("", "0.0.0.0", "::") else scheduler.ip
        try:
            self.state.relay_port = await self.relay.start(host, port)
        except OSError as e:  # the hub keeps running; outbound-only sites learn the port
            self.state.relay_port = await self.relay.start(host, 0)
            logger.error("Relay port %d is not available (%s); listening on %d instead",
                         port, e, self.state.relay_port)
        # the hub's own connections to relayed workers count as "hub", not "client"
        dask.config.set({"federation.relay.origin": "hub"})
        scheduler.handlers["federation_relay_reset"] = self.reset
        logger.info("Relay for outbound-only sites on port %d", self.state.relay_port)

    async def close(self) -> None:
        self.relay.stop()

    def reset(self, comm, site: str) -> dict[str, int]:
        """Cut a site's relayed connections (an operator's reset, and the recovery tests)."""
        who = identity(comm.extra_info.get("peercert"))
        if self.state.scheduler.address.startswith("tls://") and (
            who is None or who[0] not in ("hub", "site")
        ):
            raise PermissionError("only the hub or a site may reset relay connections")
        return {"cut": self.relay.reset(site)}
