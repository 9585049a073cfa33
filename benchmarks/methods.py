"""Shared-method round trips from a remote client, on loopback.

    python -m benchmarks.methods [--calls 300] [--out benchmarks/results/methods-<date>.json]

A hub and one site sharing ``echo(x: int) -> int`` and ``same(a: numpy.ndarray) ->
numpy.ndarray`` run as real processes. It measures the median and p99 round trip of
sequential ``fed.call("lab/echo", i).result()`` after a warm-up, and the time to send a
float64 array of 1, 10 and 100 MB to a method and receive it back (client → hub → site
worker → hub → client), with the resulting throughput.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from federation.local import LocalFederation, write_site_config

from .soak import emit

TOOLS = '''
import numpy


def echo(x: int) -> int:
    """Return x."""
    return x


def same(a: numpy.ndarray) -> numpy.ndarray:
    """Return the array it was given."""
    return a
'''


def measure(calls: int = 300, sizes_mb: tuple[int, ...] = (1, 10, 100)) -> dict:
    with tempfile.TemporaryDirectory(prefix="federation-methods-") as tmp:
        root = Path(tmp)
        (root / "lab_tools.py").write_text(TOOLS)
        cfg = write_site_config(
            root / "lab.yaml", site="lab", workers=1, nthreads=2, memory_limit="4GiB",
            methods={"echo": "lab_tools:echo", "same": "lab_tools:same"},
        )
        with LocalFederation(root / "logs", dashboard=False) as lf:
            lf.start_site(cfg)
            with lf.connect() as fed:
                for i in range(20):  # warm-up: connections, imports, schemas
                    fed.call("lab/echo", i).result()
                rtts = []
                for i in range(calls):
                    start = time.perf_counter()
                    assert fed.call("lab/echo", i).result() == i
                    rtts.append(time.perf_counter() - start)
                arrays = {}
                for mb in sizes_mb:
                    a = np.random.default_rng(mb).random(mb * 2**20 // 8)
                    start = time.perf_counter()
                    back = fed.call("lab/same", a).result()
                    seconds = time.perf_counter() - start
                    assert np.array_equal(back, a)
                    arrays[f"{mb} MB"] = {
                        "seconds": round(seconds, 4),
                        "MB_per_s_each_way": round(2 * mb / seconds, 1),
                    }
    rtts.sort()
    return {
        "date": datetime.date.today().isoformat(),
        "network": "loopback (127.0.0.1), no shaping",
        "calls": calls,
        "echo_median_ms": round(1000 * statistics.median(rtts), 2),
        "echo_p99_ms": round(1000 * rtts[int(0.99 * (len(rtts) - 1))], 2),
        "arrays": arrays,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.methods", description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--out", default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)
    emit(measure(args.calls), args.out)


if __name__ == "__main__":
    main()
