"""Lazy xarray objects for federated datasets, built from catalog metadata alone.

Every chunk becomes one task calling :func:`federation.read.read_chunk` with the
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

from .catalog import DatasetInfo, VariableInfo
from .read import read_chunk

Chunks = Mapping[str, Any] | str | int | None


def _chunks_for(
    info: DatasetInfo, var: VariableInfo, chunks: Chunks
) -> tuple[tuple[int, ...], ...]:
    """Dask chunks of one variable, xarray-style: ``{}``/``None`` keeps the storage
    chunks, ``"auto"`` picks multiples of them, a dict sets some dimensions."""
    if chunks is None or (isinstance(chunks, Mapping) and not chunks):
        spec: Any = var.chunks
    elif isinstance(chunks, (str, int)):
        spec = chunks
    else:
        spec = tuple(chunks.get(d, c) for d, c in zip(var.dims, var.chunks))
    try:
        normalized = da.core.normalize_chunks(
            spec, var.shape, dtype=np.dtype(var.dtype), previous_chunks=var.chunks
        )
    except Exception as e:  # dask's messages do not say which dataset
        raise ValueError(f"invalid chunks {chunks!r} for {info.ref} ({var.name}): {e}") from None
    if any(c <= 0 for dim in normalized for c in dim if dim != (0,)):
        raise ValueError(f"invalid chunks {chunks!r} for {info.ref}: sizes must be positive")
    limit = dask.config.get("federation.max-chunks", 1_000_000)
    count = int(np.prod([len(c) for c in normalized], dtype=np.int64))
    if count > limit:
        raise ValueError(
            f"chunks {chunks!r} would split {info.ref} ({var.name}) into {count:,} read tasks "
            f"(limit {limit:,}, federation.max-chunks); use larger chunks"
        )
    return normalized


def lazy_variable(info: DatasetInfo, var: VariableInfo, chunks: Chunks) -> da.Array:
    """A dask array whose every chunk is read at the dataset's site."""
    normalized = _chunks_for(info, var, chunks)
    token = tokenize(info.ref, info.version, var.name, normalized)
    name = f"read-{info.site}.{info.name}.{var.name}-{token}"
    bounds = [np.cumsum((0, *c)) for c in normalized]
    layer = {}
    for index in itertools.product(*(range(len(c)) for c in normalized)):
        slices = tuple(slice(int(b[i]), int(b[i + 1])) for b, i in zip(bounds, index))
        key = (name, *index)
        layer[key] = Task(key, read_chunk, info.ref, var.name, slices)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=())
    return da.Array(graph, name, normalized, dtype=np.dtype(var.dtype))


def build_dataset(info: DatasetInfo, chunks: Chunks = None) -> xr.Dataset:
    """The lazy :class:`xarray.Dataset` for a catalog entry; no data is read."""
    if isinstance(chunks, Mapping):
        dims = info.dims
        unknown = sorted(set(chunks) - set(dims))
        if unknown:
            raise ValueError(
                f"chunks for {info.ref} name unknown dimension(s) {unknown}; "
                f"its dimensions are {sorted(dims)}"
            )
    coords: dict[str, xr.Variable] = {}
    data_vars: dict[str, xr.Variable] = {}
    for var in info.variables.values():
        data = var.array() if var.values is not None else lazy_variable(info, var, chunks)
        variable = xr.Variable(var.dims, data, attrs=var.attrs)
        (coords if var.is_coord else data_vars)[var.name] = variable
    return xr.Dataset(data_vars, coords=coords, attrs=info.attrs)
