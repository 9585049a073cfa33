"""The JSON form of results and metadata served by the hub's HTTP API.

Plain values stay plain (``NaN``/``±inf`` become ``null``, dates ISO 8601 strings).
Arrays and tables become tagged objects that the JavaScript client understands::

    {"type": "ndarray",   "dtype": "float32", "shape": [2, 3], "data": [[...], [...]]}
    {"type": "DataArray", "name": "sst", "dims": ["time"], "shape": [40], "dtype": "float32",
     "data": [...], "coords": {"time": {"dims": ["time"], "shape": [40],
     "dtype": "datetime64[ns]", "data": ["2020-01-01T00:00:00", ...], "attrs": {}}},
     "attrs": {...}}
    {"type": "Dataset",   "dims": {"time": 40}, "data_vars": {name: variable},
     "coords": {name: variable}, "attrs": {...}}
    {"type": "DataFrame", "columns": [...], "index": [...], "data": [[row], ...]}
    {"type": "Series",    "name": ..., "index": [...], "data": [...]}
    {"type": "bytes",     "base64": "..."}
    {"type": "object",    "python_type": "module.Class", "repr": "..."}   (anything else)

``data`` is a nested list in C order (``shape`` says how deep). :func:`encode_result`
runs at the site that computed a method's result, so only this JSON text leaves it.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

#: A ``repr`` fallback is cut to this many characters.
MAX_REPR = 2000


def _array_data(a: np.ndarray) -> Any:
    """Nested lists of JSON values for an array of any dtype."""
    a = np.asarray(a)
    kind = a.dtype.kind
    if a.ndim == 0:
        return _array_data(a.reshape(1))[0]
    if kind == "M":
        out = np.datetime_as_string(a, unit="auto").astype(object)
        out[np.isnat(a)] = None
        return out.tolist()
    if kind == "m":
        seconds = a / np.timedelta64(1, "s")
        return _array_data(seconds)
    if kind == "f":
        if np.isfinite(a).all():
            return a.tolist()
        return np.where(np.isfinite(a), a.astype(object), None).tolist()
    if kind == "c":
        return _array_data(np.stack([a.real, a.imag], axis=-1))
    if kind in "biu":
        return a.tolist()
    return to_jsonable(a.tolist())  # strings, objects: element by element


def _variable(var: Any) -> dict[str, Any]:
    """One xarray variable (or coordinate) without its name."""
    values = np.asarray(var.values)
    return {
        "dims": [str(d) for d in var.dims],
        "shape": list(values.shape),
        "dtype": str(values.dtype),
        "data": _array_data(values),
        "attrs": to_jsonable(dict(var.attrs)),
    }


def module_of(value: Any) -> str:
    return type(value).__module__.split(".", 1)[0]


def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (see the module docstring for the tagged forms)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, complex):
        return [to_jsonable(value.real), to_jsonable(value.imag)]
    if isinstance(value, np.generic):
        if isinstance(value, (np.datetime64, np.timedelta64)):
            return _array_data(np.asarray(value))
        if isinstance(value, np.complexfloating):
            return [to_jsonable(float(value.real)), to_jsonable(float(value.imag))]
        return to_jsonable(value.item())
    if isinstance(value, np.dtype):  # encoding["dtype"]
        return str(value)
    if isinstance(value, type):  # encoding["dtype"] = str for variable-length strings
        return value.__name__
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)) or (
        module_of(value) == "cftime" and hasattr(value, "isoformat")
    ):  # cftime dates (noleap, 360_day ...) as ISO text, like numpy's
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"type": "bytes", "base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, np.ndarray):
        return {
            "type": "ndarray", "dtype": str(value.dtype), "shape": list(value.shape),
            "data": _array_data(value),
        }
    module = module_of(value)
    if module == "xarray":
        import xarray as xr

        if isinstance(value, xr.DataArray):
            return {
                "type": "DataArray",
                "name": None if value.name is None else str(value.name),
                **_variable(value.variable),
                "coords": {str(k): _variable(c.variable) for k, c in value.coords.items()},
            }
        if isinstance(value, xr.Dataset):
            return {
                "type": "Dataset",
                "dims": {str(k): int(v) for k, v in value.sizes.items()},
                "data_vars": {str(k): _variable(v.variable) for k, v in value.data_vars.items()},
                "coords": {str(k): _variable(c.variable) for k, c in value.coords.items()},
                "attrs": to_jsonable(dict(value.attrs)),
            }
    if module == "pandas":
        import pandas as pd

        if isinstance(value, pd.DataFrame):
            return {
                "type": "DataFrame",
                "columns": [to_jsonable(c) for c in value.columns],
                "index": _array_data(np.asarray(value.index)),
                "data": [
                    [to_jsonable(x) for x in row] for row in value.itertuples(index=False)
                ],
            }
        if isinstance(value, pd.Series):
            return {
                "type": "Series",
                "name": to_jsonable(value.name),
                "index": _array_data(np.asarray(value.index)),
                "data": _array_data(np.asarray(value)),
            }
        if isinstance(value, pd.Timestamp):
            return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "__array__") and hasattr(value, "dtype") and hasattr(value, "shape"):
        return to_jsonable(np.asarray(value))  # e.g. a dask array: computed here
    return {
        "type": "object",
        "python_type": f"{type(value).__module__}.{type(value).__qualname__}",
        "repr": repr(value)[:MAX_REPR],
    }


def dumps(value: Any) -> str:
    """Compact JSON text of ``to_jsonable(value)``."""
    return json.dumps(to_jsonable(value), separators=(",", ":"), allow_nan=False)


def encode_result(value: Any) -> str:
    """Task run at the site next to a method's result: its JSON text (see above)."""
    return dumps(value)
