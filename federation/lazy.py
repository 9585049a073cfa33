"""Lazy xarray objects for federated datasets, built from catalog metadata alone.

Every chunk becomes one task calling :func:`federation.sitecalls.read_chunk` with the
dataset reference, the variable and the chunk's slices. The graph is a
materialized layer on purpose: blockwise fusion could otherwise merge reads of two
sites into one task that no site can run.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask._task_spec import Task
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from .catalog import DatasetInfo, StoredVariable, decode_kwargs
from .sitecalls import read_chunk

Chunks = Mapping[str, Any] | str | int | None


def _chunks_for(
    info: DatasetInfo, var: StoredVariable, chunks: Chunks
) -> tuple[tuple[int, ...], ...]:
    """Dask chunks of one stored variable, xarray-style: ``{}``/``None`` keeps the storage
    chunks, ``"auto"`` picks multiples of them, a dict sets some dimensions.

    Contiguous (unchunked) variables are split by dask's ``array.chunk-size``, so one
    read never loads a whole multi-GB variable. Dimensions that exist only as stored
    (the string length of a character array) stay whole: xarray joins characters
    within a chunk.
    """
    dims = info.dims
    storage = var.chunks or ("auto",) * len(var.shape)
    if chunks is None or (isinstance(chunks, Mapping) and not chunks):
        spec: Any = storage
    elif isinstance(chunks, (str, int)):
        spec = tuple(chunks if d in dims else -1 for d in var.dims)
    else:
        spec = tuple(chunks.get(d, c) for d, c in zip(var.dims, storage))
    spec = tuple(-1 if d not in dims else c for d, c in zip(var.dims, spec))
    # dask cannot size objects (variable-length strings); count them as pointers
    dtype = np.dtype(var.dtype)
    dtype = np.dtype("f8") if dtype.hasobject else dtype
    try:
        normalized = da.core.normalize_chunks(
            spec, var.shape, dtype=dtype, previous_chunks=var.chunks
        )
    except Exception as e:  # dask's messages do not say which dataset
        raise ValueError(f"invalid chunks {chunks!r} for {info.ref} ({var.name}): {e}") from None
    if any(c <= 0 for dim in normalized for c in dim if dim != (0,)):
        raise ValueError(f"invalid chunks {chunks!r} for {info.ref}: sizes must be positive")
    limit = dask.config.get("federation.max-chunks")
    count = int(np.prod([len(c) for c in normalized], dtype=np.int64))
    if count > limit:
        raise ValueError(
            f"chunks {chunks!r} would split {info.ref} ({var.name}) into {count:,} read tasks "
            f"(limit {limit:,}, federation.max-chunks); use larger chunks"
        )
    return normalized


def lazy_variable(info: DatasetInfo, var: StoredVariable, chunks: Chunks) -> da.Array:
    """A dask array whose every chunk is read at the dataset's site."""
    normalized = _chunks_for(info, var, chunks)
    decoded = info.decode is None or var.decoded
    token = tokenize(info.ref, info.version, var.name, normalized)
    name = f"read-{info.site}.{info.name}.{var.name}-{token}"
    bounds = [np.cumsum((0, *c)) for c in normalized]
    layer = {}
    for index in itertools.product(*(range(len(c)) for c in normalized)):
        slices = tuple(slice(int(b[i]), int(b[i + 1])) for b, i in zip(bounds, index))
        key = (name, *index)
        # the version pins the read: the site checks it finds that version, or that
        # version with steps appended (federation.read)
        layer[key] = Task(key, read_chunk, info.ref, var.name, slices, decoded, info.version)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=())
    return da.Array(graph, name, normalized, dtype=np.dtype(var.dtype))


def _variable(info: DatasetInfo, var: StoredVariable, chunks: Chunks) -> xr.Variable:
    data = var.values if var.values is not None else lazy_variable(info, var, chunks)
    if var.cf_encoded:  # cftime dates of a decoded source, encoded by xarray for the trip
        shown = info.variables[var.name]
        encoded = xr.Variable(var.dims, data, attrs=dict(var.attrs))
        decoded = xr.conventions.decode_cf_variable(var.name, encoded).values
        return xr.Variable(var.dims, decoded, dict(shown.attrs), dict(shown.encoding))
    return xr.Variable(var.dims, data, attrs=dict(var.attrs), encoding=dict(var.encoding))


def build_dataset(info: DatasetInfo, chunks: Chunks = None) -> xr.Dataset:
    """The lazy :class:`xarray.Dataset` for a catalog entry; no data is read.

    Encoded variables are decoded lazily by :func:`xarray.decode_cf` with the site's
    decoding options, so the result equals ``xr.open_dataset`` at the site.

    Raises
    ------
    ValueError
        For chunks naming unknown dimensions or splitting a variable too finely.
    """
    if isinstance(chunks, Mapping):
        dims = info.dims
        unknown = sorted(set(chunks) - set(dims))
        if unknown:
            raise ValueError(
                f"chunks for {info.ref} name unknown dimension(s) {unknown}; "
                f"its dimensions are {sorted(dims)}"
            )
    return _build(info, info.stored, chunks)


def catalog_coordinates(info: DatasetInfo) -> xr.Dataset:
    """The coordinates whose values travel with the catalog entry, decoded (no reads)."""
    travelling = {n: v for n, v in info.stored.items() if v.values is not None}
    return _build(info, travelling, None)


def _build(info: DatasetInfo, variables: dict[str, StoredVariable], chunks: Chunks) -> xr.Dataset:
    decoded = {n: v for n, v in variables.items() if v.decoded}
    stored = {n: v for n, v in variables.items() if n not in decoded}
    variables = {name: _variable(info, var, chunks) for name, var in stored.items()}
    coords = [name for name, var in stored.items() if var.is_coord]
    ds = xr.Dataset(variables, attrs=dict(info.attrs)).set_coords(coords)
    if info.decode is not None:
        ds = xr.decode_cf(ds, **decode_kwargs(info.decode))
    for name, var in decoded.items():
        (ds.coords if var.is_coord else ds)[name] = _variable(info, var, chunks)
    # the site's order of variables: files written from it come out the same
    order = [n for n in info.variables if n in ds.variables]
    order += [n for n in ds.variables if n not in info.variables]
    coords = [n for n in order if n in ds.coords]
    ds = xr.Dataset({n: ds.variables[n] for n in order}, attrs=ds.attrs).set_coords(coords)
    ds.encoding = dict(info.encoding)
    return ds
