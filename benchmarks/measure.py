"""Measuring one run the same way for every approach.

* **Cross-border bytes** from the site workers' own counters (``SiteWorkerPlugin``
  wraps ``get_data`` and counts bytes sent per requester; the ``federation_traffic``
  worker RPC returns them). A requester of another site, or the client/hub, is a
  border crossing. For *federation* also ``fed.traffic()`` (the hub's view of the same
  counters). Reads executed at a site that does not hold the data (only possible with
  the shared-filesystem assumption) move raw bytes over that filesystem; they are
  counted from the task stream as ``remote_read_bytes``.
* **Link bytes** (namespaces only): IP bytes that left each site's and entered the
  client's shaped link, scheduler messages and heartbeats included.
* **Peak memory**: RSS of each worker process (and the client), sampled every 0.1 s.
* **Scheduler CPU**: user+system CPU of the scheduler process.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, defaultdict
from typing import Any

import psutil
from distributed import Client

from federation.protocol import WORKER_TRAFFIC, site_of

CLIENT = "client"


def worker_sites(client: Client) -> dict[str, str]:
    info = client.scheduler_info(n_workers=-1)["workers"]
    return {addr: site_of(w["resources"]) or addr for addr, w in info.items()}


def _traffic(dask_worker) -> dict:
    handler = dask_worker.handlers.get(WORKER_TRAFFIC)
    return handler() if handler else {}


def worker_counters(client: Client) -> dict[str, dict[str, list[int]]]:
    return client.run(_traffic)


def cross_border(before: dict, after: dict, sites: dict[str, str]) -> dict[str, Any]:
    """Bytes that crossed site borders between two counter snapshots."""
    rows: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for addr, by_who in after.items():
        src = sites.get(addr, addr)
        for who, counts in by_who.items():
            prev = before.get(addr, {}).get(who, [0, 0, 0])
            dest = sites.get(who, CLIENT) if who else CLIENT
            row = rows[(src, dest)]
            for i in range(3):
                row[i] += counts[i] - prev[i]
    crossing = {f"{s}->{d}": v for (s, d), v in sorted(rows.items()) if s != d and v[2]}
    within = sum(v[0] for (s, d), v in rows.items() if s == d)
    return {
        "bytes": sum(v[0] for v in crossing.values()),
        "nbytes": sum(v[1] for v in crossing.values()),
        "transfers": sum(v[2] for v in crossing.values()),
        "rows": crossing,
        "within_sites": within,
    }


def _pid(dask_worker=None, dask_scheduler=None) -> int:
    return os.getpid()


class Sampler:
    """Peak RSS of some processes, sampled in a thread."""

    def __init__(self, pids: dict[str, int], interval: float = 0.1):
        self.procs = {}
        for name, pid in pids.items():
            try:
                self.procs[name] = psutil.Process(pid)
            except psutil.NoSuchProcess:
                pass
        self.peak: dict[str, int] = defaultdict(int)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, proc in self.procs.items():
                try:
                    self.peak[name] = max(self.peak[name], proc.memory_info().rss)
                except psutil.Error:
                    pass
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def remote_reads(stream: list[dict], sites: dict[str, str], chunk_bytes) -> tuple[int, int]:
    """(bytes, tasks) of reads that ran at a site not holding their dataset.

    Read task keys are ``("read-<site>.<name>.<var>-<token>", i, j, k)``;
    ``chunk_bytes(key)`` gives the size of the chunk read.
    """
    total = n = 0
    for entry in stream:
        key = entry["key"]
        name = key[0] if isinstance(key, tuple) else str(key)
        if not name.startswith("read-"):
            continue
        data_site = name[len("read-"):].split(".", 1)[0]
        ran_at = sites.get(entry["worker"])
        if ran_at and ran_at != data_site:
            total += chunk_bytes(key)
            n += 1
    return total, n


def idle_thread_seconds(stream: list[dict], nthreads: dict[str, int]) -> float:
    """Thread-seconds the workers that ran tasks spent not computing, each between its
    first task's start and its last task's end (from the task stream's ``compute``
    intervals; ``nthreads``: worker address -> threads).

    Besides what the graph's shape imposes (a combination waiting for its inputs), this
    is the time threads waited for the scheduler — the site queue's admissions among
    it — so the federation's excess over hand-pinned Dask is what its round trips cost.
    """
    spans: dict[str, list[float]] = {}
    busy: dict[str, float] = defaultdict(float)
    for entry in stream:
        for ss in entry.get("startstops", ()):
            if ss.get("action") == "compute":
                span = spans.setdefault(entry["worker"], [ss["start"], ss["stop"]])
                span[0], span[1] = min(span[0], ss["start"]), max(span[1], ss["stop"])
                busy[entry["worker"]] += ss["stop"] - ss["start"]
    return sum(max(nthreads.get(w, 1) * (b - a) - busy[w], 0.0)
               for w, (a, b) in spans.items())


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def _scheduler_messages(dask_scheduler) -> dict[str, int]:
    """Batches and messages the scheduler sent to workers (``BatchedSend`` counters), and
    the site queue's admissions so far (see :func:`_count_admissions`)."""
    comms = list(dask_scheduler.stream_comms.values())
    admissions, admitted, idle, depths, releases = getattr(
        dask_scheduler, "_bench_admissions", [0, 0, 0, 0.0, 0])
    return {"batches": sum(c.batch_count for c in comms),
            "messages": sum(c.message_count for c in comms),
            "admissions": admissions, "admitted": admitted, "idle_admissions": idle,
            "depth_sum": depths, "label_releases": releases}


def _worker_messages(dask_worker) -> dict[str, int]:
    """Batches and messages a worker sent to the scheduler."""
    stream = dask_worker.batched_stream
    return {"batches": stream.batch_count, "messages": stream.message_count}


def _site_view(dask_scheduler, queue, labels) -> dict[str, tuple[bool, float]]:
    """Per label: whether its workers have a thread with nothing to run (fewer tasks
    processing than threads: a read admitted there now was waited for), and the tasks per
    thread the site queue allows there now (its ``per_thread``, 0 if unknown)."""
    view = {}
    for label in labels:
        workers = [ws for ws in dask_scheduler.workers.values() if label in ws.resources]
        idle = sum(len(ws.processing) for ws in workers) < sum(ws.nthreads for ws in workers)
        per_thread = getattr(queue, "per_thread", None)
        depth = (per_thread(label, workers, queue.memory_ok(workers))
                 if per_thread and workers else 0)
        view[label] = (idle, float(depth))
    return view


def _count_admissions(dask_scheduler) -> bool:
    """Count the site queue's admission rounds that released at least one parked read,
    the reads released, and the (label, round) pairs that released reads into a site
    with an idle thread — after a site's first admission of a computation, each such one
    is a round trip the site's threads waited for (prefetch keeps it at zero) — and the
    sum of the tasks per thread the queue allowed at each release (their mean: the
    prefetch depth it chose).

    Measurement only: wraps the site queue's ``admit`` (the routing plugin's
    ``queue``, found by its ``parked`` dict) on this scheduler. Each such round follows
    a worker's report of a finished task, i.e. costs one scheduler↔site round trip.
    Returns False if no site queue is found (plain scheduler, or its internals moved).
    """
    for owner in dask_scheduler.plugins.values():
        plugin = getattr(owner, "queue", None)
        admit, parked = getattr(plugin, "admit", None), getattr(plugin, "parked", None)
        if admit is None or not isinstance(parked, dict) or hasattr(admit, "_bench"):
            continue
        counts = dask_scheduler._bench_admissions = [0, 0, 0, 0.0, 0]

        def counted(admit=admit, parked=parked, counts=counts, queue=plugin):
            before = Counter(parked.values())
            view = _site_view(dask_scheduler, queue, before)
            admit()
            after = Counter(parked.values())
            released = [label for label in before if after[label] < before[label]]
            if released:
                counts[0] += 1
                counts[1] += before.total() - after.total()
                counts[2] += sum(view[label][0] for label in released)
                counts[3] += sum(view[label][1] for label in released)
                counts[4] += len(released)

        counted._bench = True
        plugin.admit = counted
        return True
    return False


def message_counts(client: Client) -> dict[str, int]:
    """Scheduler→workers and workers→scheduler batches/messages, and site-queue
    admissions, summed over the cluster (take differences around a computation)."""
    sched = client.run_on_scheduler(_scheduler_messages)
    workers = client.run(_worker_messages).values()
    return {"to_sites_batches": sched["batches"], "to_sites_messages": sched["messages"],
            "from_sites_batches": sum(w["batches"] for w in workers),
            "from_sites_messages": sum(w["messages"] for w in workers),
            "admissions": sched["admissions"], "admitted_reads": sched["admitted"],
            "idle_admissions": sched["idle_admissions"], "depth_sum": sched["depth_sum"],
            "label_releases": sched["label_releases"]}
