"""``relay://`` — a distributed comm backend for sites that only connect outwards.

An outbound-only site's workers and nannies listen on ``relay://`` addresses::

    relay://<relay host>:<relay port>/<site>/<site-internal host>:<port>

* Peers of the **same site** (their dask config ``federation.relay.site`` names it)
  connect straight to the site-internal ``host:port``: transfers inside a site stay direct.
* Everybody else — the hub, other sites' workers, clients — first asks the hub for a
  one-time ticket for ``<site>/<host>:<port>`` (``federation_relay_ticket``, over its own
  authenticated connection to the hub, ``federation.relay.hub``), then connects to the
  relay beside the hub (:mod:`scheduler_plugins.relay`) with it. The relay tells that
  endpoint over its **control connection** (opened by the site, outwards) to dial back
  with a one-time token, then splices the two TCP connections byte for byte.

So every logical connection gets its own outbound TCP connection from the site, opened
on demand: no multiplexing, so TCP flow control and back-pressure work per connection as
for direct ``tcp://``. The relay reads one JSON line at the start of a connection and
never looks at the frames after it.

With TLS (the federation's ``Security``), the spliced connection carries **end-to-end**
TLS between the two Dask peers, verified exactly as a direct ``tls://`` connection; the
relay sees ciphertext only. The control connection is itself mutual TLS with the relay,
which accepts endpoints of a site only from that site's certificate, plus a token the hub
gave the site in the reply to its registration.

Settings (dask config, set by ``dask federation site`` from the hub's reply):
``federation.relay.hub`` (the hub's address, where tickets come from; every site),
``federation.relay.address`` (``host:port`` of the relay), ``federation.relay.site``,
``federation.relay.token`` (the site's secret at the relay; every site),
``federation.relay.listen-host`` (site-internal address the workers listen on, default
``127.0.0.1``), ``federation.relay.tls`` (the site's certificate files, with TLS).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any

import dask
from distributed.comm.core import BaseListener, Connector
from distributed.comm.registry import Backend, get_backend
from distributed.comm.tcp import MAX_BUFFER_SIZE, TCP, TLS, get_stream_address
from distributed.comm.utils import ensure_concrete_host
from distributed.core import rpc
from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpclient import TCPClient

from .protocol import (
    RELAY_ACCEPT,
    RELAY_CONNECT,
    RELAY_REGISTER,
    RELAY_STARTTLS,
    RELAY_TICKET,
    call,
    read_relay_line,
    relay_line,
)

logger = logging.getLogger(__name__)

PREFIX = "relay://"
#: how long a connector waits for the relay to reach the endpoint
DIAL_TIMEOUT = 20.0


#: relay port -> ticket issuer of a relay running in this process (the hub's): the hub's
#: own connections to relayed workers take their tickets there, not over the network
LOCAL_TICKETS: dict[int, Callable[[str], str]] = {}


class RelayError(OSError):
    """The relay could not connect to the endpoint (an ``OSError``, so distributed
    treats it like any refused connection and retries)."""


def parse(loc: str) -> tuple[str, str, str]:
    """``relay-host:port/site/host:port`` → (relay, site, endpoint)."""
    try:
        relay, site, endpoint = loc.split("/")
    except ValueError:
        raise ValueError(
            f"bad relay address {PREFIX}{loc!r}: expected relay://RELAY:PORT/SITE/HOST:PORT"
        ) from None
    return relay, site, endpoint


def _host_port(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


async def send_line(stream: IOStream, op: str, **fields: Any) -> None:
    """Send one relay message (see :mod:`federation.protocol`)."""
    await stream.write(relay_line(op, **fields))


async def read_line(stream: IOStream) -> dict[str, Any]:
    """Read the relay's answer or request (one JSON object on one line)."""
    return read_relay_line(await stream.read_until(b"\n", max_bytes=65536))


async def _open(hostport: str) -> IOStream:
    host, port = _host_port(hostport)
    try:
        return await TCPClient().connect(host, port, max_buffer_size=MAX_BUFFER_SIZE)
    except StreamClosedError as e:
        raise RelayError(f"cannot reach the relay at {hostport}: {e.real_error or e}") from None


def _tls_context(connection_args: dict[str, Any]) -> ssl.SSLContext | None:
    ctx = connection_args.get("ssl_context")
    return ctx if isinstance(ctx, ssl.SSLContext) else None


def _control_tls() -> ssl.SSLContext | None:
    """Client-side TLS context for the control connection, from the site's certificate
    files (``federation.relay.tls``: ca, cert, key; set by ``dask federation site``)."""
    files = dask.config.get("federation.relay.tls")
    if not files:
        return None
    from .security import security

    return security(files["ca"], files["cert"], files["key"]).get_connection_args(
        "worker"
    )["ssl_context"]


async def _ticket(relay: str, target: str, connection_args: dict[str, Any]) -> str:
    """A one-time ticket from the hub to connect to ``target`` through ``relay``.

    Raises :class:`RelayError` (so distributed retries as for a refused connection) when
    the hub refuses, e.g. while the endpoint is reconnecting.
    """
    local = LOCAL_TICKETS.get(_host_port(relay)[1])
    try:
        if local is not None:
            return local(target)
        hub = dask.config.get("federation.relay.hub")
        if not hub:
            raise RelayError(
                f"connecting to {target} through the relay needs a ticket from the hub, but "
                "federation.relay.hub is not set ('dask federation site' sets it; a client "
                "gathers results through the hub instead)"
            )
        async with rpc(hub, timeout=DIAL_TIMEOUT, connection_args=connection_args) as r:
            return await call(
                r, RELAY_TICKET,
                target=target, site=dask.config.get("federation.relay.site"),
                token=dask.config.get("federation.relay.token"),
            )
    except (PermissionError, ValueError, KeyError) as e:
        raise RelayError(f"the hub gives no ticket for {target}: {e}") from None


def _comm(
    stream: IOStream, local: str, peer: str, deserialize: bool, tls: bool
) -> TCP:
    return (TLS if tls else TCP)(stream, local, peer, deserialize)


class RelayConnector(Connector):
    """Connects to a ``relay://`` address: directly inside the site, else via the relay."""

    async def connect(self, address: str, deserialize: bool = True, **connection_args):
        relay, site, endpoint = parse(address)
        ctx = _tls_context(connection_args)
        here = dask.config.get("federation.relay.site")
        if here == site:
            comm = await get_backend("tls" if ctx else "tcp").get_connector().connect(
                endpoint, deserialize=deserialize, **connection_args
            )
            comm._peer_addr = PREFIX + address
            return comm
        ticket = await _ticket(relay, f"{site}/{endpoint}", connection_args)
        stream = await _open(relay)
        try:
            await send_line(stream, RELAY_CONNECT, ticket=ticket)
            reply = await asyncio.wait_for(read_line(stream), DIAL_TIMEOUT)
            if not reply.get("ok"):
                raise RelayError(f"relay {relay} cannot reach {site}/{endpoint}: {reply['error']}")
            if ctx is not None:  # end-to-end TLS through the relay
                stream = await stream.start_tls(False, ssl_options=ctx)
        except (StreamClosedError, asyncio.TimeoutError, ssl.SSLError) as e:
            stream.close()
            raise RelayError(f"relay {relay} to {site}/{endpoint} failed: {e!r}") from None
        except BaseException:
            stream.close()
            raise
        local = PREFIX + get_stream_address(stream)
        return _comm(stream, local, PREFIX + address, deserialize, ctx is not None)


class RelayListener(BaseListener):
    """Listens site-internally and, through a control connection, at the relay."""

    prefix = PREFIX

    def __init__(
        self, loc: str, handle_comm, deserialize: bool = True, **connection_args: Any
    ):
        super().__init__()
        self.comm_handler = handle_comm
        self.deserialize = deserialize
        self.connection_args = connection_args
        #: server side of end-to-end TLS (None: plain tcp)
        self.ssl = _tls_context(connection_args)
        self.relay = dask.config.get("federation.relay.address")
        self.site = dask.config.get("federation.relay.site")
        if not self.relay or not self.site:
            raise ValueError(
                "a relay:// listener needs federation.relay.address and federation.relay.site; "
                "they are set by 'dask federation site' for an outbound-only site"
            )
        self.token = dask.config.get("federation.relay.token")
        self.control_tls = _control_tls() if self.ssl else None
        # the given host is distributed's guess (the interface towards the hub), which
        # would be reachable from outside; the site says where to listen instead
        self.listen_host = dask.config.get("federation.relay.listen-host")
        self.local = None
        self._control: asyncio.Task | None = None
        self._registered = asyncio.Event()
        self._dials: set[asyncio.Task] = set()
        self._stopped = False

    async def start(self) -> None:
        scheme = "tls" if self.ssl else "tcp"
        self.local = get_backend(scheme).get_listener(
            f"{self.listen_host}:0", self.comm_handler, self.deserialize, **self.connection_args
        )
        await self.local.start()
        self._control = asyncio.create_task(self._serve_control())
        try:
            await asyncio.wait_for(self._registered.wait(), DIAL_TIMEOUT)
        except asyncio.TimeoutError:
            self.stop()
            raise RelayError(
                f"could not register {self.endpoint} at the relay {self.relay}"
            ) from None

    @property
    def endpoint(self) -> str:
        host, port = self.local.get_host_port()
        return f"{self.site}/{ensure_concrete_host(host)}:{port}"

    async def _serve_control(self) -> None:
        """Keep a control connection to the relay; dial back on each request.

        Reconnects with backoff (1 s doubling to 30 s) when the connection drops.
        """
        delay = 1.0
        while not self._stopped:
            stream = None
            try:
                stream = await _open(self.relay)
                if self.control_tls is not None:  # mutual TLS with the relay: site identity
                    await send_line(stream, RELAY_STARTTLS)
                    if not (await read_line(stream)).get("ok"):
                        raise RelayError("the relay does not speak TLS")
                    stream = await stream.start_tls(False, ssl_options=self.control_tls)
                await send_line(
                    stream, RELAY_REGISTER, endpoint=self.endpoint, token=self.token
                )
                reply = await read_line(stream)
                if not reply.get("ok"):
                    logger.error("Relay %s refused %s: %s", self.relay, self.endpoint,
                                 reply.get("error"))
                else:
                    self._registered.set()
                    delay = 1.0
                    while True:
                        msg = await read_line(stream)
                        task = asyncio.create_task(
                            self._dial_back(msg["token"], msg.get("from", ""))
                        )
                        # the event loop keeps only weak references to tasks
                        self._dials.add(task)
                        task.add_done_callback(self._dials.discard)
            except (OSError, StreamClosedError, ValueError) as e:
                if not self._stopped:
                    logger.warning("Relay control connection of %s lost (%s); reconnecting "
                                   "in %.0f s", self.endpoint, e, delay)
            finally:
                if stream is not None:
                    stream.close()
            if self._stopped:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _dial_back(self, token: str, origin: str) -> None:
        try:
            stream = await _open(self.relay)
            await send_line(stream, RELAY_ACCEPT, token=token)
            if self.ssl:  # we are the TLS server of the end-to-end session
                stream = await stream.start_tls(True, ssl_options=self.ssl)
            local = PREFIX + get_stream_address(stream)
            # the dialling peer is known by its site only; port 0: not an address to call
            peer = f"{PREFIX}{self.relay}/{origin or 'hub'}/relayed:0"
            comm = _comm(stream, local, peer, self.deserialize, self.ssl is not None)
            await self.on_connection(comm)
        except (OSError, StreamClosedError, ssl.SSLError) as e:
            logger.info("Relayed connection to %s failed: %s", self.endpoint, e)
            return
        await self.comm_handler(comm)

    def stop(self) -> None:
        self._stopped = True
        if self._control is not None:
            self._control.cancel()
        if self.local is not None:
            self.local.stop()

    @property
    def listen_address(self) -> str:
        return self.contact_address

    @property
    def contact_address(self) -> str:
        return f"{PREFIX}{self.relay}/{self.endpoint}"


class RelayBackend(Backend):
    """The ``relay`` scheme (entry point ``distributed.comm.backends``)."""

    def get_connector(self) -> RelayConnector:
        return RelayConnector()

    def get_listener(self, loc, handle_comm, deserialize, **connection_args) -> RelayListener:
        return RelayListener(loc, handle_comm, deserialize, **connection_args)

    def get_address_host(self, loc: str) -> str:
        # a site-qualified host: two workers "share a host" only inside one site
        if "/" not in loc:
            return loc.rpartition(":")[0] or loc
        _, site, endpoint = parse(loc)
        return f"{site}/{_host_port(endpoint)[0]}"

    def resolve_address(self, loc: str) -> str:
        return loc

    def get_local_address_for(self, loc: str) -> str:
        return dask.config.get("federation.relay.listen-host")
