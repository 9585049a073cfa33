"""The four ways of running a workload that the benchmark compares."""

from __future__ import annotations

import time
from collections import deque

import dask
import xarray as xr
from distributed import Client

from federation.catalog import DatasetInfo
from federation.lazy import build_dataset
from federation.protocol import dataset_label, site_label, site_of_ref

from .workloads import Workload

APPROACHES = ("federation", "download", "hand-pinned", "shared-fs")
DESCRIPTIONS = {
    "federation": "dask-federation: fed.open_dataset + plain xarray, routing plugin, "
                  "no annotations",
    "download": "download-then-compute: raw inputs fetched to the client (selection applied "
                "at the site, like an OPeNDAP subset), computed locally with numpy",
    "hand-pinned": "plain dask scheduler (no plugin), expert dask.annotate(resources=...) "
                   "on reads, per-site reductions and the combination",
    "shared-fs": "plain dask scheduler (no plugin), every worker can read every dataset "
                 "(shared filesystem assumption), plain Dask placement",
}


def data_nbytes(obj: xr.DataArray | xr.Dataset) -> int:
    """Bytes of the data variables (coordinates are built from the catalog, they never
    cross a border)."""
    if isinstance(obj, xr.DataArray):
        return int(obj.nbytes)
    return int(sum(v.nbytes for v in obj.data_vars.values()))


def lazy_partials(w: Workload, open_ref, pin: bool = False) -> dict:
    partials = {}
    for ref, var, sel in w.inputs:
        ctx = dask.annotate(resources={dataset_label(ref): 1}) if pin else _null()
        with ctx:
            x = open_ref(ref)[var].sel(**sel)
            partials[ref] = w.reduce(x)
    return partials


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def combine(w: Workload, partials: dict, pin: bool = False) -> xr.Dataset:
    if pin and w.combine_computes:
        sizes = {ref: data_nbytes(p) for ref, p in partials.items()}
        biggest = max(partials, key=lambda r: sizes[r])  # ties: the first input's site
        with dask.annotate(resources={site_label(site_of_ref(biggest)): 1}):
            return w.combine(partials)
    return w.combine(partials)


def run_lazy(w: Workload, client: Client, open_ref, pin: bool = False) -> xr.Dataset:
    """federation / shared-fs (pin=False) and hand-pinned (pin=True).

    The expert also knows a dask subtlety (dask 2026.8): low-level array fusion drops
    ``dask.annotate`` annotations, and graph optimization runs on the *scheduler*. So
    the plain scheduler runs with ``optimization.fuse.active: false``
    (:class:`benchmarks.cluster.PlainCluster`), and so does the client here.
    """
    partials = lazy_partials(w, open_ref, pin=pin)
    result = combine(w, partials, pin=pin)
    with dask.config.set({"optimization.fuse.active": False} if pin else {}):
        return result.compute(scheduler=client)


def download(client: Client, lazy: xr.DataArray, batch_bytes: int, window: int = 3):
    """Fetch ``lazy`` to the client in batches of whole time chunks, ``window``
    batches in flight, each gathered straight from the site's worker."""
    tchunks = lazy.chunksizes["time"]
    batches, start, size, acc = [], 0, 0, 0
    per_step = lazy.nbytes / max(lazy.sizes["time"], 1)
    for n in tchunks:
        size += n
        acc += n * per_step
        if acc >= batch_bytes:
            batches.append((start, start + size))
            start, size, acc = start + size, 0, 0
    if size:
        batches.append((start, start + size))
    pending: deque = deque()
    parts = []
    for a, b in batches:
        pending.append(client.compute(lazy.isel(time=slice(a, b))))
        if len(pending) >= window:
            parts.append(client.gather(pending.popleft(), direct=True))
    while pending:
        parts.append(client.gather(pending.popleft(), direct=True))
    return xr.concat(parts, "time") if len(parts) > 1 else parts[0]


def run_download(w: Workload, client: Client, open_ref, batch_bytes: int, timings: dict):
    started = time.perf_counter()
    inputs = {}
    for ref, var, sel in w.inputs:
        inputs[ref] = download(client, open_ref(ref)[var].sel(**sel), batch_bytes)
    timings["download_s"] = time.perf_counter() - started
    with dask.config.set(scheduler="threads"):
        partials = {ref: w.reduce(x) for ref, x in inputs.items()}
        result = w.combine(partials).compute()
    timings["local_compute_s"] = time.perf_counter() - started - timings["download_s"]
    return result


def catalog_opener(infos: dict[str, DatasetInfo]):
    """Open datasets for plain Dask from locally built catalog records (no hub)."""
    return lambda ref: build_dataset(infos[ref], None)
