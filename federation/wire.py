"""Typed metadata values on the wire: attrs and encodings keep their numpy types.

Sites send catalog entries as msgpack (the hub never unpickles what a site sends), and
msgpack knows only plain types: it would turn ``np.int32(3)`` into ``3``, a
``valid_range`` array into a tuple, and ``encoding["dtype"]`` into nothing at all.
:func:`pack` tags what plain types cannot say; :func:`unpack` restores it::

    np.float32(0.5)        -> {"__np__": "<f4", "b": b"..."}
    np.array([0, 10])      -> {"__nd__": "<i8", "shape": [2], "b": b"..."}
    np.dtype(">i2"), str   -> {"__dtype__": ">i2"}, {"__type__": "str"}
    (1, 2), {"time"}       -> {"__tuple__": [1, 2]}, {"__set__": ["time"]}
    a zarr / numcodecs codec -> {"__codec__": its JSON config}  (unpacked as that config)

Lists stay lists (msgpack may deliver them as tuples; :func:`unpack` turns them back).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Python types that appear as values (``encoding["dtype"] = str`` for variable-length
#: strings in netCDF4)
_TYPES = {"str": str, "bytes": bytes, "object": object}


def _codec_config(value: Any) -> dict | None:
    """The JSON form of a zarr v3 codec or a numcodecs codec, if ``value`` is one."""
    for method in ("to_dict", "get_config"):
        if callable(getattr(value, method, None)) and type(value).__module__.startswith(
            ("zarr", "numcodecs")
        ):
            return {"kind": method, "config": pack(getattr(value, method)())}
    return None


def pack(value: Any) -> Any:
    """``value`` as msgpack/JSON-plain types, tagged where the type would be lost.

    Raises
    ------
    TypeError
        For values with no faithful plain form (e.g. cftime objects: encode them with
        xarray's CF coders first).
    """
    if isinstance(value, (np.str_, np.bytes_)):  # np.str_("") has itemsize 0
        return {"__np__": value.dtype.kind, "v": value.item()}
    if isinstance(value, np.generic) and not value.dtype.hasobject:
        return {"__np__": value.dtype.str, "b": value.tobytes()}
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OT" or value.dtype.itemsize == 0:
            items = [pack(v) for v in value.ravel().tolist()]
            return {"__nd__": "|O", "shape": list(value.shape), "items": items}
        data = np.ascontiguousarray(value)
        return {"__nd__": data.dtype.str, "shape": list(data.shape), "b": data.tobytes()}
    if isinstance(value, np.dtype):
        return {"__dtype__": value.str if value.kind != "T" else "T"}
    if isinstance(value, type) and value in _TYPES.values():
        return {"__type__": value.__name__}
    if isinstance(value, tuple):
        return {"__tuple__": [pack(v) for v in value]}
    if isinstance(value, (set, frozenset)):  # netCDF4's encoding["unlimited_dims"]
        return {"__set__": [pack(v) for v in sorted(value, key=str)]}
    if isinstance(value, list):
        return [pack(v) for v in value]
    if isinstance(value, dict):
        return {str(k): pack(v) for k, v in value.items()}
    codec = _codec_config(value)
    if codec is not None:
        return {"__codec__": codec}
    raise TypeError(f"cannot send a value of type {type(value).__name__}: {value!r}")


def unpack(value: Any) -> Any:
    """The inverse of :func:`pack`."""
    if isinstance(value, (list, tuple)):
        return [unpack(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__np__" in value and "v" in value:
        return (np.str_ if value["__np__"] == "U" else np.bytes_)(value["v"])
    if "__np__" in value:
        return np.frombuffer(value["b"], dtype=value["__np__"])[0]
    if "__nd__" in value:
        shape = tuple(value["shape"])
        if "items" in value:
            out = np.empty(len(value["items"]), dtype=object)
            out[:] = [unpack(v) for v in value["items"]]
            return out.reshape(shape)
        return np.frombuffer(value["b"], dtype=value["__nd__"]).reshape(shape).copy()
    if "__dtype__" in value:
        spec = value["__dtype__"]
        return np.dtypes.StringDType() if spec == "T" else np.dtype(spec)
    if "__type__" in value:
        return _TYPES[value["__type__"]]
    if "__tuple__" in value:
        return tuple(unpack(v) for v in value["__tuple__"])
    if "__set__" in value:
        return {unpack(v) for v in value["__set__"]}
    if "__codec__" in value:
        # as its JSON config, which zarr accepts in place of the codec: plain data, so a
        # strict site (which unpickles only numpy/pandas/xarray/dask) can take it
        return unpack(value["__codec__"]["config"])
    return {k: unpack(v) for k, v in value.items()}
