"""Soak: repeated cross-site computations while site workers are killed at random.

    python -m benchmarks.soak --minutes 10 [--kill-every 5] [--out soak.json]

A hub and three sites run as real processes on this machine. The driver computes a
cross-site correlation and a per-site mean over and over, checking every answer against
the value computed once up front; a second thread SIGKILLs a random site worker every
few seconds (the site's nanny restarts it), once the last victim's replacement has joined,
so that a slow machine is stressed as hard as a fast one instead of losing every worker.
At the end it reports computations done, failures, wrong results (must be 0) and the
hub's memory at start and end.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import xarray as xr

from federation.demo import write_dataset
from federation.local import LocalFederation, write_site_config
from federation.protocol import site_of

SITES = {"awi": ("sst", "sst.zarr"), "geomar": ("chl", "chl.zarr"), "dkrz": ("t2m", "t2m.nc")}


def _prepare(root: Path, days: int) -> dict[str, Path]:
    configs = {}
    for site, (kind, filename) in SITES.items():
        folder = root / site
        folder.mkdir(parents=True, exist_ok=True)
        write_dataset(kind, folder / filename, days * 180 * 360 * 4, chunk_days=5)
        configs[site] = write_site_config(
            folder / f"{site}.yaml", site=site, workers=2, nthreads=1, memory_limit="1GiB",
            datasets={kind: {"path": filename}},
        )
    return configs


def _site_workers(fed) -> list[str]:
    workers = fed.client.scheduler_info()["workers"]
    return [a for a, w in workers.items() if site_of(w["resources"])]


def _killer(fed, stop: threading.Event, every: float, kills: list[str], strength: int) -> None:
    rng = random.Random(0)
    while not stop.wait(every):
        try:
            victims = _site_workers(fed)
            if len(victims) < strength:  # the last victim's nanny has not brought it back yet
                continue
            victim = rng.choice(victims)
            pid = fed.client.run(os.getpid, workers=[victim])[victim]
            os.kill(pid, signal.SIGKILL)
            kills.append(victim)
        except Exception:  # a worker that died already; the next round picks another
            continue


def soak(minutes: float, kill_every: float = 5.0, days: int = 40,
         enough: int | None = None) -> dict:
    """Run the soak for ``minutes`` at most; with ``enough``, end as soon as that many
    workers were killed and that many computations came back (a test's bound that holds
    on a slow machine too). Returns the report described in the module docstring."""
    with tempfile.TemporaryDirectory(prefix="federation-soak-") as tmp:
        root = Path(tmp)
        configs = _prepare(root, days)
        with LocalFederation(root / "logs", dashboard=False) as lf:
            for cfg in configs.values():
                lf.start_site(cfg)
            hub = psutil.Process(lf.processes["hub"].pid)
            with lf.connect() as fed:

                def computation():
                    sst = fed.open_dataset("awi/sst").sst.mean(["lat", "lon"])
                    chl = fed.open_dataset("geomar/chl").chl.mean(["lat", "lon"])
                    t2m = fed.open_dataset("dkrz/t2m").t2m.mean()
                    return xr.corr(sst, chl, dim="time"), t2m

                expected = [float(v) for v in fed.client.compute(computation(), sync=True)]
                memory_start = hub.memory_info().rss
                stop, kills = threading.Event(), []
                strength = len(_site_workers(fed))
                killer = threading.Thread(
                    target=_killer, args=(fed, stop, kill_every, kills, strength))
                killer.start()
                done = failed = wrong = 0
                errors: list[str] = []
                started = time.monotonic()
                deadline = started + 60 * minutes

                def done_enough() -> bool:
                    return enough is not None and min(len(kills), done) >= enough

                try:
                    while time.monotonic() < deadline and not done_enough():
                        try:
                            got = fed.client.compute(computation(), sync=True)
                        except Exception as e:  # counted, and listed in the report
                            failed += 1
                            errors.append(f"{type(e).__name__}: {e}"[:300])
                            # The failed futures sit in reference cycles through the
                            # traceback; until they are collected the hub keeps their
                            # erred keys, and the same graph resubmitted fails at once
                            del e
                            gc.collect()
                            continue
                        done += 1
                        if not np.allclose([float(v) for v in got], expected, rtol=1e-6):
                            wrong += 1
                finally:
                    stop.set()
                    killer.join()
                memory_end = hub.memory_info().rss
    return {
        "minutes": round((time.monotonic() - started) / 60, 2),
        "computations": done,
        "failures": failed,
        "wrong_results": wrong,
        "workers_killed": len(kills),
        "hub_rss_start": memory_start,
        "hub_rss_end": memory_end,
        "errors": errors[:10],
    }


def emit(report: dict, out: str | None) -> None:
    """Print a report as JSON, and write it to ``out`` if given."""
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        Path(out).write_text(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--kill-every", type=float, default=5.0, help="seconds between kills")
    parser.add_argument("--out", default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)
    emit(soak(args.minutes, args.kill_every), args.out)


if __name__ == "__main__":
    main()
