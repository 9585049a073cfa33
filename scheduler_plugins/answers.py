"""Answer a client's or a site's mistake to them, not as an ERROR in the hub's log.

distributed logs every exception a comm handler raises with ``logger.exception`` (an
ERROR with a traceback) before sending it back. A typo in a dataset name is not a hub
error: :func:`user_errors` wraps a handler so that such mistakes
(:class:`~federation.errors.FederationError`, :class:`PermissionError`) travel back to
the caller exactly as before, and the hub logs one INFO line.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

from distributed.core import error_message

from federation.errors import FederationError

logger = logging.getLogger(__name__)

#: what a caller can get wrong; anything else is the hub's own fault and stays an ERROR
USER_MISTAKES = (FederationError, PermissionError)


def _answer(op: str, e: Exception) -> dict[str, Any]:
    logger.info("Refused %s: %s: %s", op, type(e).__name__, e)
    # the reply distributed itself sends for a failed handler: the caller re-raises it
    return error_message(e, status="uncaught-error")


def user_errors(handler: Callable[..., Any], op: str) -> Callable[..., Any]:
    """``handler`` (sync or async) of RPC ``op``, answering :data:`USER_MISTAKES` without an
    ERROR log."""
    if inspect.iscoroutinefunction(handler):

        @functools.wraps(handler)
        async def wrapped_async(*args: Any, **kwargs: Any) -> Any:
            try:
                return await handler(*args, **kwargs)
            except USER_MISTAKES as e:
                return _answer(op, e)

        return wrapped_async

    @functools.wraps(handler)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except USER_MISTAKES as e:
            return _answer(op, e)

    return wrapped
