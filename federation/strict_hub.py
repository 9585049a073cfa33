"""The hub runs no user code: what users send is unpickled with the strict allow-list.

A distributed scheduler unpickles what clients send — graphs, and anything a message
wraps in ``ToPickle`` — and unpickling is running code (``__reduce__`` returning
``os.system``). On a TLS federation the hub therefore unpickles everything arriving on
a connection of a *user* (a certificate of role ``user`` not named an admin) with the
allow-list of strict sites (:data:`federation.strict.ALLOWLIST`).

Users' graphs legitimately carry code the hub must not run but has to pass on: their
own functions for open sites (sent by value by cloudpickle), functions of a site's
modules that the hub cannot import. A global off the allow-list is neither imported nor
called here; it becomes an opaque stand-in that records how the pickle used it (called,
instantiated, filled) and pickles back to the same references when the scheduler sends
the task to a worker — which then unpickles it under its own rules (plain pickle on an
open site, the allow-list on a strict one). A graph whose allowed parts cannot be built
around an opaque part fails with :class:`~federation.errors.StrictRefusal` naming it.

Admins (the hub's own certificate, and the identities ``is_admin`` accepts) and
federations without TLS (no identities: anyone can do anything, see the README) keep
distributed's plain unpickler.
"""

from __future__ import annotations

import contextvars
import io
import logging
import pickle
from collections.abc import Callable
from typing import Any

import dask
import distributed.protocol.pickle
from distributed.comm.core import Comm

from .errors import StrictRefusal
from .security import identity
from .strict import (
    ALLOWLIST,
    WRAPPED,
    _canonical,
    _getattr,
    _is_exception,
    apply_kwargs,
    newobj,
    resolve_global,
)

logger = logging.getLogger("federation.strict")

#: Identity ``(role, name)`` whose connection is being served, if it is a user's.
_user: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "federation_hub_user", default=None
)

#: Whether this context is unpickling for a user (calls of stand-ins are recorded then).
_loading: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "federation_hub_loading", default=False
)

#: cloudpickle's ``state_setter`` functions, applied to objects it rebuilt.
STATE_SETTERS = (
    ("cloudpickle.cloudpickle", "_function_setstate"),
    ("cloudpickle.cloudpickle", "_class_setstate"),
)

#: Globals the scheduler itself reads from users' messages besides the allow-list: the
#: code of a computation, and futures in graphs (which it replaces by their keys).
HUB_GLOBALS = frozenset({"distributed.client:SourceCode", "distributed.client:Future"})


# -- stand-ins at the hub ---------------------------------------------------------------------

class Opaque:
    """What the hub did not resolve or build, and how the pickle used it: a global
    (``kind`` "global"), a call of a stand-in (REDUCE, "call"), an instance made by one
    (NEWOBJ, "new"), filled by BUILD, APPENDS and SETITEMS. It pickles back to what it
    stands for, for the worker that runs it.
    """

    def __init__(self, kind: str, func: Any, args: tuple, kwargs: dict):
        self._kind, self._func, self._args, self._kwargs = kind, func, args, kwargs
        self._state: Any = None
        self._setter: tuple[Any, Any] | None = None
        self._items: list = []
        self._dict_items: dict = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not _loading.get():
            raise StrictRefusal("the hub does not run code sent by users")
        if self._args in STATE_SETTERS and len(args) == 2 and isinstance(args[0], Opaque):
            # cloudpickle's state setters of what it rebuilt (a pickle's reduce value's
            # sixth item): part of that object
            args[0]._setter = (self, args[1])
            return None
        return Opaque("call", self, args, kwargs)

    def __setstate__(self, state: Any) -> None:
        self._state = state

    def append(self, item: Any) -> None:
        self._items.append(item)

    def extend(self, items: Any) -> None:
        self._items.extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._dict_items[key] = value

    def __reduce__(self) -> tuple:
        if self._kind == "global":
            return resolve_global, self._args
        if self._kind == "new":
            func, args = newobj, (self._func, *self._args)
        else:
            func, args = self._func, self._args
        if self._kwargs:
            func, args = apply_kwargs, (func, args, self._kwargs)
        state, setter = self._state, None
        if self._setter is not None:
            if state is not None:
                raise pickle.PicklingError("an opaque object with two states")
            setter, state = self._setter
        return (func, args, state, iter(self._items) if self._items else None,
                iter(self._dict_items.items()) if self._dict_items else None, setter)

    def __repr__(self) -> str:
        return f"<opaque {self._kind} {self._func if self._kind != 'global' else self._args}>"


def _hub_getattr(obj: Any, name: str, *default: Any) -> Any:
    if isinstance(obj, Opaque):
        return Opaque("call", getattr, (obj, name, *default), {})  # a user's bound method
    return _getattr(obj, name, *default)


def _is_error(module: str, name: str) -> bool:
    """Builtin exceptions and dask-federation's errors (distributed's error replies are
    test-unpickled where they are made)."""
    return (module == "builtins" and _is_exception(name)) or module == "federation.errors"


def _hub_newobj(cls: Any, *args: Any) -> Any:
    return Opaque("new", cls, args, {}) if isinstance(cls, Opaque) else newobj(cls, *args)


class _HubUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """Python's own unpickler (the C one insists that NEWOBJ gets a class), with
    opaque stand-ins for what the allow-list does not name."""

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(Opaque("new", cls, args, {}) if isinstance(cls, Opaque)
                    else cls.__new__(cls, *args))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(Opaque("new", cls, args, kwargs) if isinstance(cls, Opaque)
                    else cls.__new__(cls, *args, **kwargs))

    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def find_class(self, module: str, name: str) -> Any:
        ref = f"{module}:{name}"
        if ref == "builtins:getattr":
            return _hub_getattr
        if ref == "federation.strict:resolve_global":
            return self.find_class  # what a hub sent on, sent back: the same rules
        if ref == "federation.strict:newobj":
            return _hub_newobj
        if module.startswith("cloudpickle"):
            return Opaque("global", None, (module, name), {})  # the hub builds no code
        if ref in WRAPPED:
            return WRAPPED[ref]
        if ref in ALLOWLIST or ref in HUB_GLOBALS or (
            not any(part.startswith("__") for part in name.split("."))
            and (_canonical(module, name) in ALLOWLIST or _is_error(module, name))
        ):
            return super().find_class(module, name)
        return Opaque("global", None, (module, name), {})


def hub_loads(data: bytes, *, buffers: Any = ()) -> Any:
    """Unpickle what a user sent: allow-listed globals only; others stay opaque."""
    token = _loading.set(True)
    try:
        return _HubUnpickler(io.BytesIO(data), buffers=buffers).load()
    except Exception as e:
        who = _user.get()
        raise StrictRefusal(
            f"the hub does not unpickle this for user {who[1] if who else '?'!r}: "
            f"{type(e).__name__}: {e}. Values handed to numpy, pandas, xarray or dask "
            "objects inside a graph must be of types on the strict allow-list "
            "(federation/strict_allowlist.txt)"
        ) from None
    finally:
        _loading.reset(token)


def configured_admin(ident: tuple[str, str]) -> bool:
    """Users named in ``federation.admins`` (``admins:`` in hub.yaml) are admins."""
    return ident[1] in (dask.config.get("federation.admins") or ())


def install_hub(
    listeners: list, is_admin: Callable[[tuple[str, str]], bool] = configured_admin
) -> None:
    """Unpickle what users send to this process with :func:`hub_loads`.

    Wraps each listener's connection handler so that everything read on a user's
    connection (the client's stream with its graphs, and its RPC calls) is unpickled
    restrictedly; distributed's unpickler dispatches on a context variable.

    Parameters
    ----------
    listeners:
        The scheduler's listeners (``scheduler.listeners``).
    is_admin:
        Whether an identity ``(role, name)`` may use plain pickle; the hub's own
        certificate always may.
    """
    plain = distributed.protocol.pickle.loads
    if not getattr(plain, "federation_hub", False):

        def loads(data: bytes, *, buffers: Any = ()) -> Any:
            if _user.get() is None:
                return plain(data, buffers=buffers)
            return hub_loads(data, buffers=buffers)

        loads.federation_hub = True  # type: ignore[attr-defined]
        distributed.protocol.pickle.loads = loads
    for listener in listeners:
        handler = listener.comm_handler
        if getattr(handler, "federation_hub", False):
            continue

        async def handle_comm(comm: Comm, handler: Callable = handler) -> None:
            ident = identity(comm.extra_info.get("peercert"))
            user = ident if ident and ident[0] == "user" and not is_admin(ident) else None
            token = _user.set(user)
            try:
                await handler(comm)
            finally:
                _user.reset(token)

        handle_comm.federation_hub = True  # type: ignore[attr-defined]
        listener.comm_handler = handle_comm
