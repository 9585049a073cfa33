"""Direct vs relayed (outbound-only) sites, on loopback, in one run.

    python -m benchmarks.relay [--mb 100] [--size 200MB] [--repeats 5] [--out FILE]

Two federations with the same data run one after the other: both sites ``direct``,
then both ``outbound-only`` (every cross-site connection through the hub's relay). For
each it measures the median wall time of

* a cross-site reduction: ``xr.corr`` of area means of ``a/sst`` and ``b/chl``;
* a cross-site transfer: site ``a``'s method makes an ``--mb`` MB float64 array, site
  ``b``'s method sums it, so the array travels from a worker of ``a`` to one of ``b``.

and reports relayed / direct, and the bytes the relay carried.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import tempfile
import time
from pathlib import Path

import xarray as xr

from federation.demo import write_dataset
from federation.local import LocalFederation, write_site_config

from .soak import emit

TOOLS = '''
import numpy


def make(mb: int) -> numpy.ndarray:
    """An array of mb megabytes."""
    return numpy.ones(mb * 2**20 // 8)


def total(x: numpy.ndarray) -> float:
    """Sum of x."""
    return float(x.sum())
'''


def _site(root: Path, site: str, kind: str, size: str, connectivity: str) -> Path:
    folder = root / site
    folder.mkdir(exist_ok=True)
    (folder / f"{site}_tools.py").write_text(TOOLS)
    if not (folder / f"{kind}.zarr").exists():
        write_dataset(kind, folder / f"{kind}.zarr", size)
    return write_site_config(
        folder / f"{connectivity}-{site}.yaml", site=site, workers=1, nthreads=2,
        memory_limit="2GiB", connectivity=connectivity,
        datasets={kind: {"path": f"{kind}.zarr"}},
        methods={"make": f"{site}_tools:make", "total": f"{site}_tools:total"},
    )


def _median_seconds(run, repeats: int) -> float:
    run()  # warm-up: connections, imports
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_one(root: Path, connectivity: str, mb: int, size: str, repeats: int) -> dict:
    configs = [_site(root, "a", "sst", size, connectivity),
               _site(root, "b", "chl", size, connectivity)]
    with LocalFederation(root / f"logs-{connectivity}", dashboard=False) as lf:
        for cfg in configs:
            lf.start_site(cfg, name=cfg.stem)
        with lf.connect() as fed:
            client = fed.client

            def reduction() -> None:
                s = fed.open_dataset("a/sst").sst.mean(["lat", "lon"])
                c = fed.open_dataset("b/chl").chl.mean(["lat", "lon"])
                client.compute(xr.corr(s, c, dim="time")).result()

            def transfer() -> None:
                made = fed.method("a/make")(mb)
                got = client.compute(fed.method("b/total")(made)).result()
                assert got == mb * 2**20 // 8

            with fed.traffic() as traffic:
                result = {
                    "reduction_s": _median_seconds(reduction, repeats),
                    "transfer_s": _median_seconds(transfer, repeats),
                }
            result["crossed_borders_bytes"] = traffic.total
            result["relayed_bytes"] = fed.sites()["a"].get("relayed_bytes", 0)
    return result


def measure(mb: int = 100, size: str = "200MB", repeats: int = 5) -> dict:
    with tempfile.TemporaryDirectory(prefix="federation-relay-") as tmp:
        root = Path(tmp)
        direct = measure_one(root, "direct", mb, size, repeats)
        relayed = measure_one(root, "outbound-only", mb, size, repeats)
    return {
        "date": datetime.date.today().isoformat(),
        "network": "loopback (127.0.0.1), no shaping; hub, relay and both sites on one machine",
        "data_per_site": size,
        "transfer_MB": mb,
        "repeats": repeats,
        "direct": direct,
        "relayed": relayed,
        "relayed_over_direct": {
            k: round(relayed[k] / direct[k], 2) for k in ("reduction_s", "transfer_s")
        },
        "transfer_MB_per_s": {
            "direct": round(mb / direct["transfer_s"], 1),
            "relayed": round(mb / relayed["transfer_s"], 1),
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.relay", description=__doc__)
    parser.add_argument("--mb", type=int, default=100, help="size of the transferred array")
    parser.add_argument("--size", default="200MB", help="data per site")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)
    emit(measure(args.mb, args.size, args.repeats), args.out)


if __name__ == "__main__":
    main()
