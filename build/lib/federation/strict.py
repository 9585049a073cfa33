"""Strict sites: workers that run only allow-listed callables.

A site with ``strict: true`` starts :class:`StrictNanny` processes whose workers are
:class:`StrictWorker`. Both replace distributed's unpickler with
:func:`restricted_loads` before they listen on the network, so every pickled payload
that reaches them — task specs from the hub, data from clients and peers, errors —
is unpickled with an unpickler that resolves only allow-listed globals (see
:class:`StrictPolicy`). Unpickling *is* running code: a payload whose ``__reduce__``
names ``os.system`` runs it inside a plain ``pickle.loads``. Here a refused global is
never imported, let alone called.

A refused global does not make unpickling fail: distributed decodes the scheduler's
stream of tasks in one place for all of them, and an exception there breaks the
worker's connection with the hub. Instead the unpickler hands out an inert
:class:`Refused` stand-in, and :func:`restricted_loads` replaces a task spec that
contains one by a task that raises :class:`~federation.errors.StrictRefusal` naming
what was refused and the fix. The task fails; the worker keeps serving.

Out-of-band code (``client.run``, worker and nanny plugins, ``upload_file``, actors)
is refused by the strict worker and nanny themselves.
"""

from __future__ import annotations

import builtins
import io
import logging
import operator
import pickle
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import dask.utils
import distributed.client
import distributed.protocol.pickle
from dask._task_spec import GraphNode, Task
from distributed import Nanny, Worker
from distributed.core import error_message

from .errors import StrictRefusal

logger = logging.getLogger("federation.strict")

#: Libraries whose functions and classes a strict worker resolves (minus denied names).
ALLOWED_ROOTS = ("numpy", "pandas", "xarray", "dask", "toolz", "tlz", "cytoolz")

#: Modules allowed whole: dask-federation's errors, so refusals and failures travel.
ALLOWED_MODULES = ("federation.errors",)

#: Single globals outside those: dask-federation's site-bound functions and the
#: standard-library pieces pickle itself and dask graphs use.
ALLOWED_GLOBALS = frozenset({
    "federation.read:read_chunk",
    "federation.methods:run_method",
    "federation.results:write_result",
    "copyreg:_reconstructor", "copyreg:__newobj__", "copyreg:__newobj_ex__",
    "_codecs:encode",
    "functools:partial", "functools:reduce",
    "collections:OrderedDict", "collections:defaultdict", "collections:deque",
    "collections:Counter",
    "datetime:datetime", "datetime:date", "datetime:time", "datetime:timedelta",
    "datetime:timezone",
    # remote tracebacks of errors (tblib rebuilds them from names and line numbers)
    "tblib:Code", "tblib:Frame", "tblib:Traceback",
    "tblib.pickling_support:unpickle_traceback",
    "tblib.pickling_support:unpickle_exception",
    "tblib.pickling_support:unpickle_exception_with_attrs",
})

#: Builtins that compute on values; not open, eval, exec, getattr (wrapped), type, ...
SAFE_BUILTINS = frozenset({
    "slice", "range", "tuple", "list", "dict", "set", "frozenset", "int", "float",
    "complex", "bool", "str", "bytes", "bytearray", "object", "min", "max", "sum", "len",
    "abs", "round", "sorted", "reversed", "zip", "map", "filter", "enumerate", "divmod",
    "pow", "any", "all", "Ellipsis", "NotImplemented",
})

#: Names (module parts, attributes) that do file, process or network I/O, evaluate
#: code, import by name or change configuration, compared after stripping leading
#: underscores and an ``_impl`` suffix (numpy's private modules), lower case.
DENIED_NAMES = frozenset({
    "io", "iotools", "backends", "tutorial", "testing", "tester", "pytesttester", "f2py",
    "ctypeslib", "distutils", "datasource", "npyio", "format", "memmap", "tofile",
    "fromfile", "fromregex", "genfromtxt", "eval", "query", "computation", "plot",
    "plotting", "config", "set_option", "option_context", "set_options", "bytes", "bag",
    "image", "tiledb_io", "diagnostics", "multiprocessing", "distributed", "cli",
    "widgets", "visualize", "dot_graph", "filetext", "filetexts", "ensure_file",
    "ensure_dir", "changed_cwd", "show_versions", "print_versions", "system", "popen",
    "compile", "exec",
    # frames and their globals, reachable from generators and tracebacks
    "f_globals", "f_builtins", "f_locals", "f_back", "gi_frame", "cr_frame", "ag_frame",
    "tb_frame",
})
DENIED_PREFIXES = (
    "read_", "open_", "to_", "save", "load", "write", "dump", "import", "from_zarr",
    "from_npy", "from_tiledb", "tmp", "spawn", "subprocess",
)
#: ``to_*`` names that convert in memory.
SAFE_TO = frozenset({
    "to_container", "to_numpy", "to_dataset", "to_dataarray", "to_index",
    "to_index_variable", "to_base_variable", "to_variable", "to_series", "to_frame",
    "to_dict", "to_list", "to_pandas", "to_datetime", "to_datetime64", "to_timedelta",
    "to_timedelta64", "to_offset", "to_numeric", "to_pydatetime", "to_period",
    "to_timestamp", "to_masked_array",
})

HOW_TO_ALLOW = (
    "A strict site runs only numpy, pandas, xarray and dask code, dask-federation's "
    "readers and the site's published methods; to run other code there, the site must "
    "publish it as a method (methods: in its config) or name its module in strict_modules"
)


def _denied(part: str) -> bool:
    norm = part.lstrip("_").removesuffix("_impl").lower()
    if norm in DENIED_NAMES:
        return True
    return norm.startswith(DENIED_PREFIXES) and norm not in SAFE_TO


def _in(module: str, roots: tuple[str, ...]) -> bool:
    return any(module == root or module.startswith(root + ".") for root in roots)


@dataclass(frozen=True)
class StrictPolicy:
    """What a strict site's workers may unpickle and run.

    Parameters
    ----------
    site:
        The site's name, for messages.
    functions:
        ``module:function`` of the site's published methods and workflows.
    modules:
        Extra modules the site allows (``strict_modules``), with their submodules.
    """

    site: str
    functions: frozenset[str] = frozenset()
    modules: tuple[str, ...] = ()

    def refusal(self, module: str, name: str) -> str | None:
        """Why the global ``module:name`` is refused, or ``None`` if it is allowed."""
        ref = f"{module}:{name}"
        if ref in ALLOWED_GLOBALS or ref in self.functions:
            return None
        if any(part.startswith("__") for part in (*module.split("."), *name.split("."))):
            # a dotted name is an attribute path: Dataset.__init__.__globals__ reaches
            # the builtins (eval) of an allowed module
            return "private attributes reach code objects and globals"
        if _in(module, ALLOWED_MODULES):
            return None
        if module == "builtins":
            if name in SAFE_BUILTINS or _is_exception(name):
                return None
            return "not on the allow-list"
        if module in ("operator", "_operator"):
            return None  # arithmetic and item access; attrgetter/methodcaller are wrapped
        if module.startswith("cloudpickle"):
            return "code defined in the client's session, sent by value"
        if not _in(module, ALLOWED_ROOTS + self.modules):
            return "not on the allow-list"
        if any(_denied(part) for part in (*module.split("."), *name.split("."))):
            return "it can do file, process or network I/O or evaluate code"
        return None


def _is_exception(name: str) -> bool:
    obj = getattr(builtins, name, None)
    return isinstance(obj, type) and issubclass(obj, BaseException)


#: The policy of this process, set by :func:`install`.
_policy: StrictPolicy | None = None
#: Refusals of the load running in this thread (``None`` outside a load).
_loading = threading.local()


class Refused:
    """Stands in for a global a strict worker refused while unpickling.

    Pickle builds objects by calling what it looked up (REDUCE, NEWOBJ) and then
    filling them (BUILD, APPENDS, SETITEMS, ADDITEMS); on a stand-in all of these do
    nothing, so a crafted payload yields inert objects instead of running code, and
    unpickling does not fail. Called outside unpickling, it raises the refusal.
    """

    refusal = "refused by a strict site"

    def __new__(cls, *args: Any, **kwargs: Any) -> Refused:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass

    def add(self, item: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> Refused:
        if getattr(_loading, "refusals", None) is not None:
            return self  # e.g. REDUCE on a stand-in: stays inert
        raise StrictRefusal(self.refusal)

    def __reduce__(self) -> tuple[type, tuple[str]]:
        # sent back (e.g. gathered by a client) as the refusal it stands for
        return StrictRefusal, (self.refusal,)

    def __repr__(self) -> str:
        return f"<Refused: {self.refusal}>"


def _message(refusals: list[tuple[str, str]]) -> str:
    site = _policy.site if _policy else "?"
    what = "; ".join(f"{name!r} ({reason})" for name, reason in dict(refusals).items())
    return f"strict site {site!r} refuses {what}. {HOW_TO_ALLOW}"


def _refuse(name: str, reason: str) -> type[Refused]:
    """Record a refusal in the running load and return a stand-in class.

    A class, not an instance: pickle's NEWOBJ insists on one. Outside a load (a
    wrapped ``getattr`` called by a task) the refusal is raised instead.
    """
    refusals = getattr(_loading, "refusals", None)
    if refusals is None:
        raise StrictRefusal(_message([(name, reason)]))
    refusals.append((name, reason))
    return type("Refused", (Refused,), {"refusal": _message([(name, reason)])})


#: Private attributes ordinary graphs look up: xarray's finalizers of lazy objects
#: (bound methods pickle as ``getattr(obj, name)``).
PRIVATE_ATTRIBUTES = frozenset({"_dask_finalize", "_dask_postcompute", "_dask_postpersist"})


def _attribute(name: str) -> str | None:
    """Why an attribute name may not be looked up by a task, or ``None``."""
    for part in name.split("."):
        if part.startswith("_") and part not in PRIVATE_ATTRIBUTES:
            return "private attributes reach code objects and globals"
        if _denied(part):
            return "it can do file, process or network I/O or evaluate code"
    return None


# Pickled attribute lookups are a classic way out of an allow-list:
# attrgetter("__init__.__globals__") on an allowed object reaches os, builtins, ...
# The unpickler hands out these wrappers instead, which refuse private and denied names.

def _getattr(obj: Any, name: str, *default: Any) -> Any:
    reason = _attribute(name)
    if reason:
        return _refuse(f"getattr(..., {name!r})", reason)()
    return getattr(obj, name, *default)


def _attrgetter(*names: str) -> Callable:
    for name in names:
        reason = _attribute(name)
        if reason:
            return _refuse(f"operator.attrgetter({name!r})", reason)()
    return operator.attrgetter(*names)


def _methodcaller(name: str, /, *args: Any, **kwargs: Any) -> Callable:
    reason = _attribute(name)
    if reason:
        return _refuse(f"operator.methodcaller({name!r})", reason)()
    return operator.methodcaller(name, *args, **kwargs)


def _dask_methodcaller(method: str) -> Callable:
    reason = _attribute(method)
    if reason:
        return _refuse(f"dask.utils.methodcaller({method!r})", reason)()
    return dask.utils.methodcaller(method)


WRAPPED: dict[str, Callable] = {
    "builtins:getattr": _getattr,
    "operator:attrgetter": _attrgetter,
    "_operator:attrgetter": _attrgetter,
    "operator:methodcaller": _methodcaller,
    "_operator:methodcaller": _methodcaller,
    "dask.utils:methodcaller": _dask_methodcaller,
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        wrapped = WRAPPED.get(f"{module}:{name}")
        if wrapped is not None:
            return wrapped
        assert _policy is not None
        reason = _policy.refusal(module, name)
        if reason:
            return _refuse(f"{module}.{name}", reason)
        return super().find_class(module, name)  # imports only allowed modules


def _fail(message: str) -> NoReturn:
    raise StrictRefusal(message)


def restricted_loads(data: bytes, *, buffers: Any = ()) -> Any:
    """``pickle.loads`` with the allow-list of this process's :class:`StrictPolicy`.

    A task spec that refers to anything refused becomes a task raising
    :class:`StrictRefusal` (so that task fails and nothing of it runs); any other
    object becomes a :class:`Refused` stand-in carrying the message.
    """
    outer = getattr(_loading, "refusals", None)
    refusals: list[tuple[str, str]] = [] if outer is None else outer
    _loading.refusals = refusals
    try:
        obj = _Unpickler(io.BytesIO(data), buffers=buffers).load()
    finally:
        _loading.refusals = outer
    if outer is not None or not refusals:
        return obj  # nested loads (e.g. inside a dask-serialized array) report to the outer
    message = _message(refusals)
    logger.warning("%s", message)
    if isinstance(obj, GraphNode):
        return Task(obj.key, _fail, message)
    stand_in = Refused()
    stand_in.refusal = message
    return stand_in


def install(policy: StrictPolicy) -> None:
    """Make this process unpickle everything it receives with :func:`restricted_loads`.

    distributed has no extension point for its unpickler: the protocol (task specs,
    ``ToPickle``, the "pickle" serialization family, ``client.run``, plugins, errors)
    calls ``distributed.protocol.pickle.loads`` at call time, and the client imported
    ``loads`` by name. Replacing both covers every path; it must happen before the
    process listens, which is why the strict worker and nanny call it first.
    """
    global _policy
    _policy = policy
    distributed.protocol.pickle.loads = restricted_loads
    distributed.client.loads = restricted_loads


def _refusing(site: str, op: str) -> Callable:
    def refuse(**kwargs: Any) -> NoReturn:
        raise StrictRefusal(
            f"strict site {site!r} does not run code sent outside a task ({op!r}: "
            "client.run, plugins, uploaded files and actors are refused); ask the site "
            "to publish the code as a method"
        )

    return refuse


def _refuse_plugin(site: str, name: str | None) -> dict:
    refusal = StrictRefusal(
        f"strict site {site!r} does not install plugins sent by the hub or clients "
        f"({name!r}); only the site's own configuration sets up its workers"
    )
    logger.warning("%s", refusal)
    return error_message(refusal)


#: Worker handlers that run code not given as a task.
REFUSED_WORKER_HANDLERS = (
    "run", "run_coroutine", "upload_file", "actor_execute", "actor_attribute",
)


class StrictWorker(Worker):
    """A worker of a strict site (see the module docstring).

    Plugins arriving pickled from the hub are refused too, among them distributed's
    P2P shuffle plugin: P2P shuffles do not run on strict sites (their tasks would be
    refused anyway), so no peer can push shuffle data to be unpickled here.
    """

    def __init__(self, *args: Any, strict_policy: StrictPolicy, **kwargs: Any):
        install(strict_policy)
        super().__init__(*args, **kwargs)
        self.strict_policy = strict_policy
        for op in REFUSED_WORKER_HANDLERS:
            self.handlers[op] = _refusing(strict_policy.site, op)

    async def plugin_add(
        self, plugin: Any, name: str | None = None, catch_errors: bool = True
    ) -> dict:
        if isinstance(plugin, bytes):  # pickled: from the hub, not from the site process
            return _refuse_plugin(self.strict_policy.site, name)
        return await super().plugin_add(plugin, name=name, catch_errors=catch_errors)


class StrictNanny(Nanny):
    """The nanny of a strict site's worker: starts a :class:`StrictWorker` and
    refuses ``client.run(..., nanny=True)`` and nanny plugins.

    It lives in the site process, so that process unpickles restrictedly too.
    """

    def __init__(self, *args: Any, strict_policy: StrictPolicy, **kwargs: Any):
        install(strict_policy)
        super().__init__(
            *args, worker_class=StrictWorker, strict_policy=strict_policy, **kwargs
        )
        self.strict_policy = strict_policy
        self.handlers["run"] = _refusing(strict_policy.site, "run")

    async def plugin_add(self, plugin: Any, name: str | None = None) -> dict:
        if isinstance(plugin, bytes):
            return _refuse_plugin(self.strict_policy.site, name)
        return await super().plugin_add(plugin, name=name)
