"""The site-local bound: the analysis run by plain Dask at the site on its local files.

    python -m benchmarks.sitelocal SPEC.json      # prints one JSON line

No hub, no network, no plugins: a ``LocalCluster`` with the site worker's threads and
memory limit opens the file with ``xr.open_dataset`` (the same chunks as the
federation's lazy dataset) and runs the workload's per-site reduction. That is the
fastest the data can be processed with the site's cores; the benchmark runs it in the
site's network namespace, beside the site's federation and plain-Dask workers.

SPEC: ``{"path": ..., "var": ..., "sel": {...}, "chunks": {dim: size}, "workload": name,
"nthreads": 2, "memory_limit": bytes, "repeats": 1}``. Output: ``{"wall_s": best of
repeats, "walls": [...], "fingerprint": {...}}`` (the fingerprint of the reduction only).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import xarray as xr
from distributed import Client, LocalCluster

from .workloads import WORKLOADS, fingerprint


def _selection(sel: dict) -> dict:
    """JSON turns slices into [start, stop] lists: make them slices again."""
    return {k: slice(*v) if isinstance(v, list) else v for k, v in sel.items()}


def run(spec: dict) -> dict:
    w = WORKLOADS[spec["workload"]]
    with LocalCluster(n_workers=1, threads_per_worker=spec["nthreads"],
                      memory_limit=spec["memory_limit"], dashboard_address=None,
                      processes=True) as cluster, Client(cluster) as client:
        ds = xr.open_dataset(spec["path"], chunks=spec["chunks"])
        x = ds[spec["var"]].sel(**_selection(spec["sel"]))
        x.isel(time=slice(0, 1)).mean().compute()  # warm-up: imports, the opened file
        walls, result = [], None
        for _ in range(spec.get("repeats", 1)):
            started = time.perf_counter()
            result = client.compute(w.reduce(x)).result()
            walls.append(time.perf_counter() - started)
    out = result if isinstance(result, xr.Dataset) else result.to_dataset(name=spec["var"])
    return {"wall_s": min(walls), "walls": walls, "fingerprint": fingerprint(out)}


if __name__ == "__main__":
    print(json.dumps(run(json.loads(Path(sys.argv[1]).read_text()))))
