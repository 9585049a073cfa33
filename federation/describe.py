"""Describing a site's source for the catalog, checked against what xarray shows there.

Runs at the site only (site process, and workers storing results).
"""

from __future__ import annotations

import logging

import xarray as xr
from xarray.core.utils import dict_equiv

from .catalog import DatasetInfo, decode_kwargs, describe_dataset
from .lazy import build_dataset
from .sources import Source

logger = logging.getLogger("federation.site")

#: encoding keys the rebuilt dataset must carry like the site's
ENCODING_KEYS = (
    "units", "calendar", "dtype", "scale_factor", "add_offset", "_FillValue",
    "missing_value", "chunks", "chunksizes", "preferred_chunks", "coordinates",
)


def difference(shown: xr.Dataset, rebuilt: xr.Dataset) -> str | None:
    """How a client's lazily rebuilt dataset would differ from the site's (``None``:
    same variables, dims, dtypes, attrs, encodings and indexes)."""
    if set(shown.variables) != set(rebuilt.variables) or set(shown.coords) != set(
        rebuilt.coords
    ):
        return f"variables {sorted(rebuilt.variables)} instead of {sorted(shown.variables)}"
    if not dict_equiv(shown.attrs, rebuilt.attrs):
        return "dataset attrs differ"
    for name, var in shown.variables.items():
        other = rebuilt.variables[name]
        if (var.dims, var.dtype) != (other.dims, other.dtype):
            return f"{name}: {other.dims} {other.dtype} instead of {var.dims} {var.dtype}"
        if not dict_equiv(var.attrs, other.attrs):
            return f"{name}: attrs differ"
        keep = [k for k in ENCODING_KEYS if k in var.encoding or k in other.encoding]
        if not dict_equiv(
            {k: var.encoding.get(k) for k in keep}, {k: other.encoding.get(k) for k in keep}
        ):
            return f"{name}: encoding differs"
    for name, index in shown.xindexes.to_pandas_indexes().items():
        other = rebuilt.xindexes.to_pandas_indexes().get(name)
        if other is None or type(index) is not type(other) or not index.equals(other):
            return f"index {name!r} differs"
    return None


def describe_source(
    site: str, name: str, source: Source, description: str = "",
    replica_of: str | None = None,
) -> DatasetInfo:
    """Open ``source`` as users see it and as stored, and describe it for the catalog.

    The stored (encoded) form is used when the client's :func:`xarray.decode_cf` of it
    rebuilds what xarray shows at the site; otherwise (a glob, an engine that decodes by
    itself) reads return decoded values.

    Raises
    ------
    Exception
        Whatever xarray or the engine raises for a source it cannot open.
    """
    stamp = source.stamp()
    with source.open() as ds:
        if not source.is_glob:
            with source.open_stored() as stored:
                options = decode_kwargs(source.open_options)
                info = describe_dataset(
                    site, name, ds, description, stamp, replica_of, stored=stored,
                    decode={k: source.open_options[k] for k in options},
                )
            try:
                why = difference(ds, build_dataset(info, dict.fromkeys(info.dims, -1)))
            except Exception as e:  # e.g. an engine that decoded already: decoding again fails
                why = f"{type(e).__name__}: {e}"
            if why is None:
                return info
            logger.info("%s/%s travels decoded: decoding it at clients gives %s", site, name, why)
        return describe_dataset(site, name, ds, description, stamp, replica_of)
