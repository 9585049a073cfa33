"""Many sites at one hub, on loopback.

    python -m benchmarks.scale [--sites 50] [--datasets 10000] [--idle 30] [--quick] [--out FILE]

Starts a hub and ``--sites`` sites (one worker with one thread each; ``--datasets``
datasets in all, spread over the sites, every one a small zarr store shared on disk)
and measures

* **registration**: seconds from starting all sites at once until every site serves and
  ``fed.sites()`` lists them all (and the slowest site's own start-up, from its log);
* **hub CPU when idle**: the hub's CPU seconds per second over ``--idle`` seconds with
  every site registered and nothing computing (heartbeats, membership and catalog
  polls, dashboard sampling);
* **catalog latency**: ``fed.catalog()`` (median and max of 5; the first call separately);
* **dashboard page load**: the hub's ``/federation`` page and Dask's ``/status`` over
  HTTP (median of 3, bytes);
* **a computation touching every site**: the mean of one variable per site.

CPU and wall times depend on what else runs: the load average is recorded with them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from unittest.mock import patch

import psutil

from federation.demo import write_dataset
from federation.local import LocalFederation, write_site_config

#: seconds a site may take to register (and keeps trying to reach the hub)
SITE_WAIT_S = 1800

#: for the sites and their workers only: 50 sites share this machine's 2 cores, where a
#: real federation gives each its own; an idle worker's statistical profiler (a sample
#: every 10 ms) is ~1.5 % of a core of the ~5 % an idle site costs (measured with psutil,
#: 2026-12-01), and 50 of them starve the hub being measured. The hub is unaffected
#: (it has no workers).
SITE_ENV = {"DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False"}


def _timed(fn, n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _tree_rss(proc: psutil.Process) -> int:
    """RSS of a site process and its workers."""
    return sum(p.memory_info().rss for p in (proc, *proc.children(recursive=True)))


def _check_memory(min_free: int) -> None:
    """Stop before the sites exhaust a shared machine's memory."""
    free = psutil.virtual_memory().available
    if free < min_free:
        raise SystemExit(f"only {free / 2**30:.1f} GiB of memory left while starting sites "
                         f"(--min-free {min_free / 2**30:.1f} GiB); run fewer sites")


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=120) as r:
        return len(r.read())


def run(sites: int, datasets: int, idle: float, workdir: Path, log=print,
        min_free: int = 2 * 2**30, stagger: int = 0) -> dict:
    store = write_dataset("sst", workdir / "tiny.zarr", "1MiB", chunk_days=30)
    per_site = [datasets // sites + (i < datasets % sites) for i in range(sites)]
    configs = []
    for i, n in enumerate(per_site):
        site = f"s{i:03d}"
        (workdir / site).mkdir()
        configs.append(write_site_config(
            workdir / f"{site}.yaml", site=site, workers=1, nthreads=1, memory_limit="512MiB",
            local_directory=str(workdir / site),
            datasets={f"d{j:04d}": {"path": str(store)} for j in range(n)},
        ))
    out: dict = {"sites": sites, "datasets": sum(per_site), "stagger": stagger,
                 "site_env": SITE_ENV, "load_1min_before": os.getloadavg()[0]}
    # the processes LocalFederation starts inherit it; restored afterwards
    with patch.dict(os.environ, SITE_ENV):
        return _run(out, configs, sites, idle, workdir, log, min_free, stagger)


def _run(out: dict, configs: list[Path], sites: int, idle: float, workdir: Path, log,
         min_free: int, stagger: int) -> dict:
    with LocalFederation(workdir / "logs") as lf:
        hub = psutil.Process(lf.processes["hub"].pid)
        hub_cpu0 = _cpu(hub)
        started = time.perf_counter()
        procs = {}
        # ``stagger`` sites at a time: 50 sites describing their datasets at once on this
        # machine's cores starve the hub; and with every site on the same 2 cores the hub
        # can take minutes to accept a registration, so each site keeps trying for as
        # long as the benchmark waits for it (the default ``--timeout`` is 30 s)
        for first in range(0, len(configs), stagger or len(configs)):
            wave = configs[first:first + (stagger or len(configs))]
            procs.update({cfg.stem: lf.start_site(cfg, "--timeout", str(SITE_WAIT_S),
                                                  wait=False) for cfg in wave})
            for cfg in wave:
                _check_memory(min_free)
                lf.wait_for_site(cfg.stem, procs[cfg.stem], timeout=SITE_WAIT_S)
        fed = lf.connect(timeout="120s")
        try:
            while len(fed.sites()) < sites:
                time.sleep(0.5)
            out["registration_s"] = time.perf_counter() - started
            # the hub's part of it: the rest is the sites describing their datasets
            # (all on this machine's cores at once)
            out["hub_cpu_registration_s"] = _cpu(hub) - hub_cpu0
            out["site_processes_rss_bytes"] = sum(
                _tree_rss(psutil.Process(p.pid)) for p in procs.values())
            out["load_1min_registered"] = os.getloadavg()[0]
            log(f"{sites} sites registered in {out['registration_s']:.1f} s (hub CPU "
                f"{out['hub_cpu_registration_s']:.1f} s)")

            cpu0, t0 = _cpu(hub), time.perf_counter()
            time.sleep(idle)
            cpu1, t1 = _cpu(hub), time.perf_counter()
            out["hub_idle_cpu_fraction"] = (cpu1 - cpu0) / (t1 - t0)
            out["hub_rss_bytes"] = hub.memory_info().rss
            out["idle_s"] = t1 - t0
            log(f"hub idle: {100 * out['hub_idle_cpu_fraction']:.1f} % of a core")

            first = _timed(fed.catalog, 1)[0]
            times = _timed(fed.catalog, 5)
            rows = len(fed.catalog())
            out["catalog"] = {"rows": rows, "first_s": first,
                              "median_s": statistics.median(times), "max_s": max(times)}
            log(f"fed.catalog(): {rows} rows, median {out['catalog']['median_s']:.3f} s")

            pages = {}
            for name, url in (("federation", lf.page_url), ("status", lf.dashboard_url)):
                size = _get(url)  # warm: bokeh builds the document on first load
                walls = _timed(lambda url=url: _get(url), 3)
                pages[name] = {"bytes": size, "median_s": statistics.median(walls)}
            out["dashboard"] = pages
            log("pages: " + ", ".join(f"{k} {v['median_s']:.2f} s" for k, v in pages.items()))

            parts = [fed.open_dataset(f"{cfg.stem}/d0000")["sst"].mean() for cfg in configs]
            started = time.perf_counter()
            fed.client.compute(parts, sync=True)
            out["compute_every_site_s"] = time.perf_counter() - started
        finally:
            fed.close()
    out["load_1min_after"] = os.getloadavg()[0]
    return out


def hub_side(sites: int, datasets: int, workdir: Path) -> dict:
    """The hub's part alone, in this process (no site processes, no workers): ``sites``
    registrations of ``datasets`` in all through the catalog plugin's handler, then
    ``fed.catalog()``'s handler with msgpack, and loading the ``/federation`` page (bokeh
    builds its document per load) with the row cap and without it. For machines where
    ``sites`` real sites do not fit (each is two processes describing its datasets)."""
    import asyncio

    import dask
    import msgpack
    from distributed import Scheduler
    from tornado.httpclient import AsyncHTTPClient

    from federation.config import load_site_config
    from federation.site import scan_catalog

    store = write_dataset("sst", workdir / "tiny.zarr", "1MiB", chunk_days=30)
    n = datasets // sites
    config = write_site_config(workdir / "one.yaml", site="s000", workers=1,
                               local_directory=str(workdir),
                               datasets={f"d{j:04d}": {"path": str(store)} for j in range(n)})
    started = time.process_time()
    wire = [info.to_wire() for info in scan_catalog(load_site_config(config))]
    out: dict = {"mode": "hub-side, in-process", "sites": sites, "datasets": n * sites,
                 "site_describe_cpu_s": time.process_time() - started,
                 "register_bytes_per_site": len(msgpack.packb(wire))}

    class Peer:  # what the handlers read of a site's or client's connection (no TLS)
        peer_address = "tcp://127.0.0.1:1"
        extra_info: dict = {}

    async def measure() -> None:
        async with Scheduler(dashboard_address="127.0.0.1:0", port=0,
                             preload=["scheduler_plugins"]) as scheduler:
            catalog = scheduler.plugins["federation-catalog"]
            cpu = []
            for i in range(sites):
                packed = msgpack.packb([{**d, "site": f"s{i:03d}"} for d in wire])
                t0 = time.process_time()
                catalog.register_site(Peer(), f"s{i:03d}", f"session{i}", msgpack.unpackb(packed))
                cpu.append(time.process_time() - t0)
            for i in range(sites):  # registering took longer than a session lives unbeaten
                catalog.state.heartbeat(f"s{i:03d}", f"session{i}")
            out["register_cpu_s_per_site"] = statistics.median(cpu)
            out["register_cpu_s_total"] = sum(cpu)
            walls = _timed(lambda: msgpack.packb(catalog.catalog(Peer())), 5)
            out["catalog"] = {"rows": len(catalog.catalog(Peer())),
                              "hub_median_s": statistics.median(walls)}
            # the page over HTTP from this process's loop: bokeh builds a session document
            url = f"http://127.0.0.1:{scheduler.http_server.port}/federation"
            for cap in (int(dask.config.get("federation.dashboard.max-rows")), n * sites):
                walls = []
                with dask.config.set({"federation.dashboard.max-rows": cap}):
                    for _ in range(3):
                        t0 = time.perf_counter()
                        await AsyncHTTPClient().fetch(url, request_timeout=300)
                        walls.append(time.perf_counter() - t0)
                out.setdefault("page_load_s", {})[f"max-rows {cap}"] = statistics.median(walls)

    asyncio.run(measure())
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale")
    p.add_argument("--sites", type=int, default=50)
    p.add_argument("--datasets", type=int, default=10_000, help="in all, spread over sites")
    p.add_argument("--idle", type=float, default=30, help="seconds of idle hub CPU sampling")
    p.add_argument("--quick", action="store_true", help="2 sites, 10 datasets, 2 s idle")
    p.add_argument("--out", default=None, help="write the JSON report here")
    p.add_argument("--min-free", type=float, default=2.0,
                   help="GiB of memory that must stay available while sites start")
    p.add_argument("--stagger", type=int, default=0,
                   help="start this many sites at a time (default 0: all at once)")
    p.add_argument("--hub-side", action="store_true",
                   help="only the hub's part, in-process, without site processes")
    a = p.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # progress of a long run, as it goes
    if a.quick:
        a.sites, a.datasets, a.idle = 2, 10, 2
    with tempfile.TemporaryDirectory(prefix="fedscale-") as tmp:
        report = {"date": datetime.date.today().isoformat(), "cpus": os.cpu_count(),
                  "load_1min_before": os.getloadavg()[0],
                  **(hub_side(a.sites, a.datasets, Path(tmp)) if a.hub_side else
                     run(a.sites, a.datasets, a.idle, Path(tmp),
                         min_free=int(a.min_free * 2**30), stagger=a.stagger))}
    text = json.dumps(report, indent=1)
    if a.out:
        Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
