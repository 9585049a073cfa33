"""Requests per second per caller: token buckets, and the hub's RPC handlers throttled.

A user polling the catalog in a tight loop must not slow everybody else's calls down.
Each caller (a certificate's identity; without TLS the peer's host) gets a bucket of
``burst`` requests refilled at ``rate`` per second. Over the rate, an RPC waits for its
turn (back-pressure, so an honest client just slows down) and is refused when it would
have to wait longer than :data:`MAX_WAIT`; HTTP answers 429 (see :mod:`.http.guard`).

A ``federation_*`` handler's refusal (``PermissionError``, ``ValueError``, ``LookupError``,
a ``FederationError``) is a caller's mistake, not a hub fault: the caller gets the same
exception, and the hub logs one line (at most once a minute per handler) instead of
distributed's ERROR traceback.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

from distributed.comm import get_address_host
from distributed.core import error_message

from federation import protocol
from federation.errors import FederationError
from federation.security import identity

from .grants import principal
from .quietlog import QuietLog

logger = logging.getLogger(__name__)
quiet = QuietLog(logger)
#: what a handler raises for a caller's mistake or a refusal
REFUSALS = (PermissionError, ValueError, LookupError, FederationError)

#: the longest an RPC waits for its turn before it is refused (s)
MAX_WAIT = 10.0
#: not throttled: a site's liveness (a delayed heartbeat would expire the site) and relay
#: tickets, which have their own per-identity limits
UNTHROTTLED = frozenset({
    protocol.REGISTER_SITE, protocol.HEARTBEAT, protocol.UNREGISTER_SITE, protocol.RELAY_TICKET,
})


class RateLimited(PermissionError):
    """Too many requests from one caller (the message names the setting)."""


class Buckets:
    """One token bucket per caller key: ``rate`` per second, at most ``burst`` saved."""

    def __init__(self, rate: Callable[[], float], burst: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = burst
        #: key -> (tokens, monotonic time of the last update)
        self._state: dict[str, tuple[float, float]] = {}

    def delay(self, key: str) -> float:
        """Take one token for ``key``; returns how long (s) the caller should wait for it
        (0: now). The token is taken either way, so waiting callers queue up fairly."""
        rate, burst = max(self.rate(), 1e-9), max(self.burst(), 1.0)
        now = time.monotonic()
        tokens, last = self._state.get(key, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate) - 1.0
        if len(self._state) > 10_000:  # forget callers that are full again
            self._state = {k: v for k, v in self._state.items()
                           if v[0] + (now - v[1]) * rate < burst}
        self._state[key] = (tokens, now)
        return 0.0 if tokens >= 0 else -tokens / rate

    def refund(self, key: str) -> None:
        """Give back a token of a request that was refused without being served."""
        tokens, last = self._state.get(key, (0.0, time.monotonic()))
        self._state[key] = (tokens + 1.0, last)


def caller(comm: Any) -> str:
    """Who is calling over ``comm``: certificate identity, else the peer's host."""
    ident = principal(identity(comm.extra_info.get("peercert")))
    if ident is not None:
        return ident
    try:
        return get_address_host(comm.peer_address)
    except (ValueError, TypeError):
        return str(comm.peer_address)


def throttled(handler: Callable, buckets: Buckets | None, setting: str) -> Callable:
    """``handler`` (a distributed RPC handler) behind ``buckets``, keyed by :func:`caller`
    (``None``: not rate-limited, refusals still answered without a hub traceback)."""
    takes_comm = next(iter(inspect.signature(handler).parameters), None) == "comm"

    async def wrapper(comm, **kwargs: Any) -> Any:
        key = caller(comm)
        wait = buckets.delay(key) if buckets is not None else 0.0
        if wait > MAX_WAIT:
            buckets.refund(key)
            quiet.log(logging.WARNING, "rate", "Throttled %s: over %g requests per second",
                      key, buckets.rate())
            return error_message(RateLimited(
                f"too many requests from {key}: over {buckets.rate():g} per second "
                f"({setting} in the hub's config); slow down and retry"
            ), status="uncaught-error")
        if wait:
            await asyncio.sleep(wait)
        try:
            result = handler(comm, **kwargs) if takes_comm else handler(**kwargs)
            return await result if inspect.isawaitable(result) else result
        except REFUSALS as e:
            quiet.log(logging.INFO, name, "Refused %s from %s: %s", name, key, e)
            return error_message(e, status="uncaught-error")

    name = getattr(handler, "__name__", "handler")
    wrapper.__name__ = name
    return wrapper

