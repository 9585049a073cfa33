"""The benchmark driver: runs every workload with every approach and measures them.

It runs where the scientist sits: in the ``client`` namespace (shaped network) or on
loopback. Both clusters (the federation and the plain Dask one) run side by side on
the same sites, and the approaches are interleaved per workload, so that the load
other processes put on the machine hits all approaches alike.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import dask
import numpy as np
import psutil
from distributed import Client, get_task_stream

import federation
from federation.catalog import describe_dataset
from federation.config import load_site_config
from federation.sources import source_for

from . import approaches as ap
from .cluster import FederationCluster, PlainCluster, Processes
from .measure import (
    Sampler,
    Timer,
    _count_admissions,
    _pid,
    cpu_seconds,
    cross_border,
    idle_thread_seconds,
    message_counts,
    remote_reads,
    worker_counters,
    worker_sites,
)
from .network import Loopback, Namespaces
from .workloads import WORKLOADS, agrees, fingerprint


def make_net(spec: dict):
    if spec["mode"] == "netns":
        # the router itself runs in the parent (benchmarks.__main__); here only the
        # namespaces' names, addresses and link counters are needed
        return Namespaces(spec["roles"], bandwidth=spec["bandwidth"])
    return Loopback()


def connect_rtt(host: str, port: int, n: int = 15) -> float:
    """Median TCP handshake time to ``host:port`` in ms: one round trip each."""
    times = []
    for _ in range(n):
        started = time.perf_counter()
        with socket.create_connection((host, port), timeout=10):
            times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def set_rtt(spec: dict, rtt_ms: float) -> None:
    """Change the delay router's RTT (the RTT sweep); only with a router."""
    from .delay import control

    control(spec["router_control"], delay_ms=rtt_ms / 2)


def local_infos(configs: dict[str, str]) -> dict:
    """Catalog records built at the client from the site configs, for plain Dask."""
    infos = {}
    for cfg_path in configs.values():
        cfg = load_site_config(cfg_path)
        for name, ds_cfg in cfg.datasets.items():
            source = source_for(ds_cfg)
            with source.open() as ds:
                info = describe_dataset(cfg.site, name, ds, ds_cfg.description, source.stamp())
            infos[info.ref] = info
    return infos


def chunk_sizer(opened: dict):
    """key -> bytes of the chunk a read task produces, from the lazy arrays."""
    layers = {}
    for ds in opened.values():
        for v in ds.data_vars.values():
            arr = v.data
            layers[arr.name] = (arr.chunks, arr.dtype.itemsize)

    def size(key) -> int:
        chunks, itemsize = layers.get(key[0], ((), 0))
        if not chunks:
            return 0
        return int(math.prod(c[i] for c, i in zip(chunks, key[1:])) * itemsize)

    return size


class Bench:
    def __init__(self, spec: dict, log=print):
        self.spec = spec
        self.log = log
        self.net = make_net(spec)
        self.workdir = Path(spec["workdir"])
        self.procs = Processes(self.workdir / "logs")
        self.runs: list[dict] = []
        #: the RTT the delay router adds now (ms); None: no router
        self.rtt_ms: float | None = None
        self.repeat = 0

    # -- one measured run --------------------------------------------------------------

    def measure(self, workload: str, approach: str, client: Client, fn, fed=None,
                opened=None) -> dict:
        sites = worker_sites(client)
        pids = client.run(_pid)
        sched_pid = client.run_on_scheduler(_pid)
        mem_pids = {sites.get(a, a): p for a, p in pids.items()}
        mem_pids["client"] = os.getpid()
        record: dict[str, Any] = {"workload": workload, "approach": approach,
                                  "rtt_ms": self.rtt_ms, "repeat": self.repeat,
                                  "load_1min": os.getloadavg()[0]}
        before = worker_counters(client)
        messages0 = message_counts(client)
        links0 = self.net.link_counters()
        cpu0 = cpu_seconds(sched_pid)
        wcpu0 = {a: cpu_seconds(p) for a, p in pids.items()}
        traffic = fed.traffic() if fed is not None else contextlib.nullcontext()
        extra: dict = {}
        try:
            with traffic as tr, get_task_stream(client=client) as ts, \
                    Sampler(mem_pids) as mem, Timer() as timer:
                result = fn(extra)
        except Exception as e:  # keep going: one failure must not lose the whole run
            return self._failed(record, f"{type(e).__name__}: {e}")
        cpu1 = cpu_seconds(sched_pid)
        try:
            wcpu = sum(cpu_seconds(p) - wcpu0[a] for a, p in pids.items())
        except psutil.NoSuchProcess as e:  # its nanny restarts it; this run does not compare
            return self._failed(record, f"a site worker died during the run (pid {e.pid})")
        messages1 = message_counts(client)
        links1 = self.net.link_counters()
        after = worker_counters(client)
        crossing = cross_border(before, after, sites)
        stream = ts.data
        sizer = chunk_sizer(opened or {})
        rr_bytes, rr_tasks = remote_reads(stream, sites, sizer)
        read_tasks = sum(1 for e in stream if str(e["key"][0] if isinstance(e["key"], tuple)
                                                  else e["key"]).startswith("read-"))
        record.update(
            wall_s=timer.seconds,
            cross_bytes=crossing["bytes"],
            cross_nbytes=crossing["nbytes"],
            cross_transfers=crossing["transfers"],
            cross_rows=crossing["rows"],
            within_site_bytes=crossing["within_sites"],
            remote_read_bytes=rr_bytes,
            remote_read_tasks=rr_tasks,
            idle_thread_s=idle_thread_seconds(stream, client.nthreads()),
            tasks=len(stream),
            read_tasks=read_tasks,
            scheduler_cpu_s=cpu1 - cpu0,
            scheduler_cpu_per_task_us=(cpu1 - cpu0) / max(len(stream), 1) * 1e6,
            # CPU the site workers spent (tasks, comms, our worker plugins): under
            # contention every extra CPU second there waits for a core
            workers_cpu_s=wcpu,
            peak_rss={k: v for k, v in mem.peak.items() if k != "client"},
            peak_worker_rss=max((v for k, v in mem.peak.items() if k != "client"), default=0),
            client_peak_rss=mem.peak.get("client", 0),
            result_nbytes=ap.data_nbytes(result),
            fingerprint=fingerprint(result),
            # scheduler→site batches: each is a message a site waits for (new tasks,
            # fetch orders), so with an RTT each may cost a round trip
            messages={k: messages1[k] - messages0[k] for k in messages0},
            **extra,
        )
        if fed is not None:
            record["fed_traffic_total"] = tr.total
        if links0 is not None and links1 is not None:
            record["link_bytes"] = {
                role: {d: links1[role][d] - links0[role][d] for d in ("out", "in")}
                for role in links1
            }
            record["link_bytes_out_of_sites"] = sum(
                record["link_bytes"][s]["out"] for s in self.spec["sites"]
            )
            record["link_bytes_into_client"] = record["link_bytes"]["client"]["in"]
        self.runs.append(record)
        self.log(
            f"  {workload:12s} {approach:12s} {timer.seconds:8.1f} s  "
            f"{crossing['bytes'] / 2**20:10.2f} MiB crossed"
            + (f" (+{rr_bytes / 2**20:.1f} MiB remote reads)" if rr_bytes else "")
            + f"  peak worker {record['peak_worker_rss'] / 2**20:.0f} MiB"
        )
        return record

    def _failed(self, record: dict, error: str) -> dict:
        self.log(f"  {record['workload']}/{record['approach']} FAILED: {error}")
        record["error"] = error
        record["traceback"] = traceback.format_exc()[-3000:]
        self.runs.append(record)
        return record

    # -- the whole matrix --------------------------------------------------------------

    def run(self) -> dict:
        spec = self.spec
        started = time.time()
        configs = spec["configs"]
        fed_cluster = FederationCluster(self.net, self.procs, configs, spec["hub_port"])
        plain = PlainCluster(self.net, self.procs, configs, spec["plain_port"])
        results: dict[str, Any] = {"runs": self.runs}
        try:
            self.log("starting the federation (hub + sites) and the plain Dask cluster ...")
            for cluster in (fed_cluster, plain):  # both at once: start-up overlaps
                cluster.start_scheduler()
            for cluster in (fed_cluster, plain):
                cluster.start_sites()
            for cluster in (fed_cluster, plain):
                cluster.wait()
            fed = federation.connect(fed_cluster.address, timeout="60s", set_as_default=False)
            pclient = Client(plain.address, timeout="60s", set_as_default=False)
            try:
                results["admissions_counted"] = fed.client.run_on_scheduler(_count_admissions)
                for rtt in spec.get("rtts") or [None]:
                    if rtt is not None:
                        set_rtt(spec, rtt)
                        measured = connect_rtt(self.net.host("hub"), spec["hub_port"])
                        results.setdefault("rtt_measured_ms", {})[str(rtt)] = measured
                        self.log(f"== RTT {rtt:g} ms (TCP handshake to the hub: "
                                 f"{measured:.1f} ms) ==")
                    self.rtt_ms = rtt
                    results["minimum"] = self.matrix(fed, pclient)
            finally:
                fed.close()
                pclient.close()
        finally:
            plain.stop()
            fed_cluster.stop()
        if spec.get("overhead_tasks"):
            from .overhead import scheduler_overhead

            self.log(f"scheduler overhead: {spec['overhead_tasks']:,}-task graph, "
                     "plugin off vs on ...")
            results["overhead"] = scheduler_overhead(
                self.net, self.procs, self.workdir, spec, log=self.log
            )
        results["driver_seconds"] = time.time() - started
        results["driver_host"] = {"python": platform.python_version(),
                                  "cpus": os.cpu_count(), "dask": dask.__version__}
        return results

    def matrix(self, fed, pclient) -> dict:
        spec = self.spec
        infos = local_infos(spec["configs"])
        open_fed = fed.open_dataset
        open_plain = ap.catalog_opener(infos)
        minimum: dict[str, dict] = {}
        # warm-up: imports, first connections, opened datasets at every worker
        for client, opener in ((fed.client, open_fed), (pclient, open_plain)):
            for ref in infos:
                ds = opener(ref)
                var = next(iter(ds.data_vars))
                ds[var].isel(time=slice(0, 1)).mean().compute(scheduler=client)
        for name in spec["workloads"]:
            w = WORKLOADS[name]
            refs = [ref for ref, _, _ in w.inputs]
            partials = ap.lazy_partials(w, open_fed)
            partial_nbytes = {ref: ap.data_nbytes(p) for ref, p in partials.items()}
            result_nbytes = ap.data_nbytes(w.combine(partials))
            input_nbytes = sum(
                int(open_fed(ref)[var].sel(**sel).nbytes) for ref, var, sel in w.inputs
            )
            minimum[name] = {
                "description": w.description,
                "partials": partial_nbytes,
                "result_nbytes": result_nbytes,
                "minimum_bytes": w.minimum_bytes(partial_nbytes, result_nbytes),
                "input_nbytes": input_nbytes,
            }
            self.log(f"{name}: {w.description}")
            opened_fed = {ref: open_fed(ref) for ref in refs}
            opened_plain = {ref: open_plain(ref) for ref in refs}
            # repeats interleave the approaches, so that a drift of the machine's state
            # during the run reaches all of them alike
            for self.repeat in range(spec.get("repeats", 1)):
                for approach in spec["approaches"]:
                    self.measure_one(name, approach, w, fed, pclient, open_fed, open_plain,
                                     opened_fed, opened_plain)
            # same answer from every approach?
            runs = [r for r in self.runs if r["workload"] == name and "fingerprint" in r
                    and r.get("rtt_ms") == self.rtt_ms]
            if runs:
                ref_fp = runs[0]["fingerprint"]
                for r in runs:
                    r["agrees_with_" + runs[0]["approach"]] = agrees(ref_fp, r["fingerprint"])
        return minimum

    def measure_one(self, name: str, approach: str, w, fed, pclient, open_fed, open_plain,
                    opened_fed: dict, opened_plain: dict) -> None:
        """One run of workload ``name`` by ``approach`` (appended to ``self.runs``)."""
        if approach == "federation":
            self.measure(name, approach, fed.client,
                         lambda extra: ap.run_lazy(w, fed.client, open_fed),
                         fed=fed, opened=opened_fed)
        elif approach == "download":
            self.measure(name, approach, fed.client,
                         lambda extra: ap.run_download(
                             w, fed.client, open_fed, self.spec["batch_bytes"], extra),
                         opened=opened_fed)
        elif approach == "hand-pinned":
            self.measure(name, approach, pclient,
                         lambda extra: ap.run_lazy(w, pclient, open_plain, pin=True),
                         opened=opened_plain)
        elif approach == "shared-fs":
            self.measure(name, approach, pclient,
                         lambda extra: ap.run_lazy(w, pclient, open_plain),
                         opened=opened_plain)
        elif approach == "site-local":
            self.site_local(w, opened_fed)

    def site_local(self, w, opened: dict) -> dict:
        """The site-local bound: each input's reduction by plain Dask in its site's
        namespace on the local file (:mod:`benchmarks.sitelocal`); sites work in
        parallel, so the bound is the slowest site. The combination is not included
        (it is tiny and needs the partials at one place)."""
        record: dict[str, Any] = {"workload": w.name, "approach": "site-local",
                                  "rtt_ms": self.rtt_ms, "repeat": self.repeat,
                                  "load_1min": os.getloadavg()[0],
                                  "per_site": {}}
        for ref, var, sel in w.inputs:
            site, name = ref.split("/")
            cfg = load_site_config(self.spec["configs"][site])
            chunks = {d: c[0] for d, c in opened[ref][var].chunksizes.items()}
            job = {"path": str(cfg.datasets[name].path), "var": var, "workload": w.name,
                   "sel": {k: [v.start, v.stop] if isinstance(v, slice) else v
                           for k, v in sel.items()},
                   "chunks": chunks, "nthreads": cfg.nthreads,
                   "memory_limit": cfg.memory_limit}
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                json.dump(job, f)
            try:
                proc = subprocess.run(
                    [*self.net.prefix(site), sys.executable, "-m", "benchmarks.sitelocal",
                     f.name], capture_output=True, text=True, timeout=1800,
                    cwd=str(Path(__file__).resolve().parent.parent))
            finally:
                os.unlink(f.name)
            if proc.returncode != 0:
                record["error"] = f"site-local at {site} failed: {proc.stderr[-2000:]}"
                self.log(f"  {w.name:12s} site-local   FAILED: {proc.stderr[-300:]}")
                self.runs.append(record)
                return record
            record["per_site"][site] = json.loads(proc.stdout.strip().splitlines()[-1])
        record["wall_s"] = max(r["wall_s"] for r in record["per_site"].values())
        record["cross_bytes"] = 0
        self.runs.append(record)
        self.log(f"  {w.name:12s} {'site-local':12s} {record['wall_s']:8.1f} s  (slowest "
                 "site's own reduction, no hub, no network)")
        return record


def _print(*args) -> None:
    print(*args, flush=True)


def drive(spec: dict, log=_print) -> dict:
    bench = Bench(spec, log=log)
    try:
        return bench.run()
    finally:
        bench.procs.stop_all()


def summarize_ratio(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def _np_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    return str(o)
