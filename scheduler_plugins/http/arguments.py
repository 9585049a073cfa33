"""JSON in: the request body of a call and its array arguments as Python values.

A call's body is a JSON object of arguments by name. Parameters whose schema carries
``x-federation-type`` (``xarray.Dataset``, ``xarray.DataArray``, ``numpy.ndarray``) also
take a federated dataset, ``{"dataset": "site/name", "variable": "sst", "chunks": {...}}``
(opened lazily, so the method reads it where it lives), or the tagged JSON forms that
:mod:`.codec` writes (``{"type": "ndarray" | "DataArray" | "Dataset", ...}``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from dask.utils import parse_bytes

from .common import setting
from .errors import ApiError

if TYPE_CHECKING:
    import numpy as np
    import xarray as xr

    from ..state import FederationState


def parse_body(body: bytes) -> dict[str, Any]:
    """The JSON object of a request body (``{}`` if empty).

    Raises :class:`ApiError` 413 above ``federation.http.max-body-bytes`` (before parsing),
    400 ``bad_json`` for invalid or too deeply nested JSON, 400 ``bad_arguments`` for
    anything but an object.
    """
    if not body:
        return {}
    limit = parse_bytes(setting("max-body-bytes"))
    if len(body) > limit:
        raise ApiError(
            413, "body_too_large",
            f"the request body has {len(body):,} bytes, more than "
            f"federation.http.max-body-bytes ({limit:,}); pass large data as a dataset "
            "reference ({\"dataset\": \"site/name\"}) instead",
        )
    try:
        value = json.loads(body)
    except ValueError as e:
        raise ApiError(400, "bad_json", f"the request body is not valid JSON: {e}") from None
    except RecursionError:
        raise ApiError(
            400, "bad_json", "the request body nests JSON arrays/objects too deeply"
        ) from None
    if not isinstance(value, dict):
        raise ApiError(
            400, "bad_arguments",
            f"the request body must be a JSON object of arguments, not {type(value).__name__}",
        )
    return value


def _array(v: dict[str, Any]) -> np.ndarray:
    import numpy as np

    if v.get("dtype"):
        return np.asarray(v["data"], dtype=v["dtype"])  # null -> NaN / NaT
    arr = np.asarray(v["data"])
    if arr.dtype == object:  # numbers and nulls
        try:
            return arr.astype(float)
        except (TypeError, ValueError):
            pass
    return arr


def _variable(v: dict[str, Any]) -> xr.Variable:
    import xarray as xr

    return xr.Variable(v["dims"], _array(v), attrs=v.get("attrs"))


def _coords(value: dict[str, Any]) -> dict[str, xr.Variable]:
    return {k: _variable(c) for k, c in (value.get("coords") or {}).items()}


def _from_dataset(state: FederationState, name: str, kind: str, value: dict[str, Any]) -> Any:
    """A ``{"dataset": ..., "variable": ...}`` argument: the federated dataset, lazily."""
    from federation.lazy import build_dataset

    ds = build_dataset(state.dataset(str(value["dataset"])), value.get("chunks"))
    variable = value.get("variable")
    if kind == "xarray.Dataset":
        if variable is None:
            return ds
        return ds[[variable] if isinstance(variable, str) else list(variable)]
    if variable is None:
        if len(ds.data_vars) != 1:
            raise ApiError(
                400, "bad_arguments",
                f"parameter {name!r}: say which variable of {value['dataset']!r} "
                f"with 'variable' (one of {sorted(ds.data_vars)})",
            )
        variable = next(iter(ds.data_vars))
    if variable not in ds.data_vars:
        raise ApiError(
            400, "bad_arguments",
            f"parameter {name!r}: {value['dataset']!r} has no variable {variable!r}; "
            f"it has {sorted(ds.data_vars)}",
        )
    da = ds[variable]
    return da if kind == "xarray.DataArray" else da.data


def _from_json_form(kind: str, tag: str, value: dict[str, Any]) -> Any:
    """A tagged JSON array as the parameter's ``kind``; ``None`` for an unknown tag."""
    import xarray as xr

    if tag == "ndarray":
        arr = _array(value)
        return arr if kind == "numpy.ndarray" else xr.DataArray(arr)
    if tag == "DataArray":
        da = xr.DataArray(_variable(value), name=value.get("name"), coords=_coords(value))
        if kind == "numpy.ndarray":
            return da.values
        return da if kind == "xarray.DataArray" else da.to_dataset(name=da.name or "data")
    if tag == "Dataset":
        return xr.Dataset(
            {k: _variable(v) for k, v in value.get("data_vars", {}).items()},
            coords=_coords(value), attrs=value.get("attrs"),
        )
    return None


def decode_argument(state: FederationState, param: dict[str, Any], value: Any) -> Any:
    """``value`` for the method parameter ``param`` (a ``ParameterInfo`` as a dict).

    Only array parameters are decoded; other values pass unchanged (the method's
    signature checks them). Raises :class:`ApiError` 400 naming the parameter for a bad
    JSON form or variable; an unknown dataset raises ``UnknownDatasetError`` (404).
    """
    kind = (param.get("schema") or {}).get("x-federation-type")
    if not kind or not isinstance(value, dict):
        return value
    name = param["name"]
    if "dataset" in value:
        return _from_dataset(state, name, kind, value)
    tag = value.get("type", "DataArray" if "dims" in value else "ndarray")
    try:
        decoded = _from_json_form(kind, tag, value)
    except (KeyError, TypeError, ValueError) as e:
        raise ApiError(
            400, "bad_arguments", f"parameter {name!r}: not a valid {kind} in JSON form: {e}"
        ) from None
    if decoded is None:
        raise ApiError(
            400, "bad_arguments",
            f"parameter {name!r} expects {kind}: give {{\"dataset\": \"site/name\"}} or its "
            f"JSON form ({{\"type\": \"ndarray\" | \"DataArray\" | \"Dataset\", ...}}), not "
            f"type {tag!r}",
        )
    return decoded
