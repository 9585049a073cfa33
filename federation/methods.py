"""Shared methods and workflows: functions a site publishes and runs on its own workers.

A site lists ``name: module:function`` under ``methods:`` (or ``workflows:``) in its
config. The site process imports each function and announces a :class:`MethodInfo`:
name, signature, docstring and JSON schemas of parameters and return value derived
from the type hints with pydantic. Only names and schemas leave the site, never code.

A call is one task calling :func:`federation.sitecalls.run_method` with the method's
``site/name``; the routing plugin binds it to the owning site, whose workers resolve
the name to the function (:meth:`~federation.sitecontext.SiteContext.method`), validate
the arguments again and run it (:func:`run_at_site`).

xarray, dask and numpy values have schemas of their own (``x-federation-type``), and
lazy ones may be passed: dask computes them (at their own sites) and hands the method
the values.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import traceback
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jsonschema
import numpy as np
import xarray as xr
from pydantic import TypeAdapter

from .errors import ArgumentError, MethodError
from .protocol import MethodInfo, ParameterInfo, site_of_ref

if TYPE_CHECKING:
    from .sitecontext import SiteContext

#: Types that cannot be described by JSON schema; they get a schema of their own.
ARRAY_TYPES: dict[str, type] = {
    "xarray.Dataset": xr.Dataset,
    "xarray.DataArray": xr.DataArray,
    "numpy.ndarray": np.ndarray,
}


def _array_type_name(annotation: Any) -> str | None:
    for name, cls in ARRAY_TYPES.items():
        if annotation is cls:
            return name
    return None


def schema_of(annotation: Any) -> dict[str, Any]:
    """JSON schema of a type hint; arrays and xarray objects get a documented stand-in::

        {"x-federation-type": "xarray.Dataset", "description": "..."}
    """
    if annotation is inspect.Parameter.empty or annotation is Any:
        return {}
    if name := _array_type_name(annotation):
        return {
            "x-federation-type": name,
            "description": f"a {name} (lazy dask-backed values are computed first)",
        }
    try:
        return TypeAdapter(annotation).json_schema()
    except Exception:  # a type pydantic cannot describe: accept anything, say what
        return {"description": f"a {getattr(annotation, '__name__', annotation)}"}


def _annotation_text(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return ""
    if isinstance(annotation, type):
        module = annotation.__module__
        prefix = "" if module == "builtins" else f"{module.split('.')[0]}."
        return f"{prefix}{annotation.__qualname__}"
    return str(annotation).replace("typing.", "")


def _json_default(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


def load_function(spec: str) -> Callable:
    """Import ``module:function``."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{spec!r} is not of the form module:function")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{spec!r} is not callable")
    return obj


def describe_function(site: str, name: str, kind: str, func: Callable) -> MethodInfo:
    """Describe a function from its signature, type hints and docstring."""
    sig = inspect.signature(func)
    try:
        hints = typing.get_type_hints(func)
    except Exception:
        hints = {}
    params = []
    for p in sig.parameters.values():
        annotation = hints.get(p.name, p.annotation)
        params.append(
            ParameterInfo(
                name=p.name,
                kind=p.kind.name,
                annotation=_annotation_text(annotation),
                schema=schema_of(annotation),
                has_default=p.default is not inspect.Parameter.empty,
                default=_json_default(p.default) if p.default is not inspect.Parameter.empty
                else None,
            )
        )
    ret = hints.get("return", sig.return_annotation)
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        source = repr(func)
    version = hashlib.sha256(source.encode()).hexdigest()[:16]
    return MethodInfo(
        site=site,
        name=name,
        kind=kind,
        doc=inspect.getdoc(func) or "",
        parameters=params,
        returns=schema_of(ret),
        return_annotation=_annotation_text(ret),
        version=version,
    )


def _check_value(info: MethodInfo, param: ParameterInfo, value: Any) -> None:
    array_type = param.schema.get("x-federation-type")
    if array_type:
        if not isinstance(value, ARRAY_TYPES[array_type]) and not hasattr(value, "__dask_graph__"):
            raise ArgumentError(
                f"{info.ref}: parameter {param.name!r} expects {array_type}, "
                f"got {type(value).__name__}"
            )
        return
    if not param.schema or hasattr(value, "__dask_graph__"):
        return  # unconstrained, or a lazy value checked at the site once computed
    try:
        jsonschema.validate(value, param.schema)
    except jsonschema.ValidationError as e:
        raise ArgumentError(
            f"{info.ref}: parameter {param.name!r} expects {param.annotation or 'a value'} "
            f"({e.message}), got {value!r}"
        ) from None
    except (jsonschema.SchemaError, TypeError):
        return  # not JSON-shaped (e.g. a tuple): left to the site's pydantic check


def bind_arguments(info: MethodInfo, args: tuple, kwargs: dict) -> inspect.BoundArguments:
    """Bind a call to the remote signature; missing or unexpected arguments are named."""
    try:
        bound = info.python_signature().bind(*args, **kwargs)
    except TypeError as e:
        raise ArgumentError(f"{info.ref}{info.signature}: {e}") from None
    by_name = {p.name: p for p in info.parameters}
    for name, value in bound.arguments.items():
        param = by_name[name]
        if param.kind == "VAR_POSITIONAL" or param.kind == "VAR_KEYWORD":
            continue
        _check_value(info, param, value)
    return bound


def validate_arguments(info: MethodInfo, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Validate keyword arguments (e.g. from JSON); returns them bound by name."""
    return dict(bind_arguments(info, (), kwargs).arguments)


# -- at the site ---------------------------------------------------------------------------


def _validate_at_site(ref: str, func: Callable, args: tuple, kwargs: dict) -> None:
    sig = inspect.signature(func)
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError as e:
        raise ArgumentError(f"{ref}: {e}") from None
    hints = typing.get_type_hints(func)
    for name, value in bound.arguments.items():
        annotation = hints.get(name)
        if annotation is None or _array_type_name(annotation):
            continue
        if sig.parameters[name].kind in (inspect.Parameter.VAR_POSITIONAL,
                                         inspect.Parameter.VAR_KEYWORD):
            continue
        try:
            TypeAdapter(annotation).validate_python(value, strict=False)
        except Exception as e:
            raise ArgumentError(f"{ref}: parameter {name!r}: {e}") from None


def run_at_site(context: SiteContext, ref: str, args: tuple, kwargs: dict[str, Any]) -> Any:
    """Run the shared method ``ref`` (``site/name``) of site ``context`` here; called by
    :func:`federation.sitecalls.run_method` in a site's task.

    The routing plugin only lets this run on the owning site's workers, and only in a
    task the hub signed a capability for (see :mod:`federation.capability`).

    Raises
    ------
    MethodError
        If the site does not publish ``ref``, or the method raised (with the remote
        traceback).
    ArgumentError
        If the arguments do not fit the method's signature and type hints.
    """
    spec = context.method(ref)
    context.require("method", ref)
    func = load_function(spec)
    _validate_at_site(ref, func, args, kwargs)
    try:
        return func(*args, **kwargs)
    except Exception as e:
        site = site_of_ref(ref)
        remote = traceback.format_exc()
        raise MethodError(
            f"method {ref!r} failed at site {site!r}: {type(e).__name__}: {e}\n\n"
            f"Remote traceback (site {site!r}):\n{remote}"
        ) from None
