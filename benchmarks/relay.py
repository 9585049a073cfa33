"""Direct vs relayed (outbound-only) sites, in one run: time, throughput, CPU per GB.

    python -m benchmarks.relay [--mb 100] [--size 200MB] [--repeats 5]
                               [--loopback | --shaped] [--bandwidth 100mbit] [--quick]
                               [--out FILE]

Two federations with the same data run one after the other: both sites ``direct``,
then both ``outbound-only`` (every cross-site connection through the hub's relay). For
each it measures the median wall time of

* a cross-site reduction: ``xr.corr`` of area means of ``a/sst`` and ``b/chl``;
* a cross-site transfer: site ``a``'s method makes an ``--mb`` MB float64 array, site
  ``b``'s method sums it, so the array travels from a worker of ``a`` to one of ``b``.

and reports relayed / direct, the bytes the relay carried, and the CPU seconds the hub
process and each site's processes (site, nanny, worker) spent per GB transferred during
the timed transfers (psutil ``cpu_times`` before and after).

It runs twice: on loopback, unshaped (where the CPU is the bound), and — as root, with
network namespaces — on the shaped network of :mod:`benchmarks.network` (hub, ``a`` and
``b`` each behind their own ``--bandwidth`` link, the driver in the ``client``
namespace). ``--loopback`` runs only the first, ``--shaped`` only the second. Each
records the machine's load average before and after. Run it under ``flock
/tmp/netns.lock`` (fixed namespace names). ``--quick``: a few MB, one repeat (the CI
smoke test).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import xarray as xr

from federation.demo import write_dataset
from federation.local import LocalFederation, write_site_config

from .network import Loopback, Namespaces, can_use_namespaces
from .soak import emit

REPO = Path(__file__).resolve().parent.parent
#: site name -> its role in the namespace network
ROLES = {"a": "awi", "b": "geomar"}

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


def _median_seconds(run: Callable[[], None], repeats: int) -> float:
    run()  # warm-up: connections, imports
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants."""
    total = 0.0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def measure_one(
    root: Path, connectivity: str, mb: int, size: str, repeats: int, net
) -> dict:
    """One federation (both sites ``connectivity``): reduction and transfer medians, and
    CPU seconds per transferred GB of the hub and of each site's process tree."""
    configs = {s: _site(root, s, kind, size, connectivity)
               for s, kind in (("a", "sst"), ("b", "chl"))}
    with LocalFederation(root / f"logs-{connectivity}", dashboard=False,
                         host=net.host("hub"), hub_wrapper=tuple(net.prefix("hub"))) as lf:
        for s, cfg in configs.items():
            lf.start_site(cfg, name=s, wrapper=tuple(net.prefix(ROLES[s])))
        pids = {name: proc.pid for name, proc in lf.processes.items()}
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
                result = {"reduction_s": _median_seconds(reduction, repeats)}
                transfer()  # warm-up outside the CPU count
                relayed0 = fed.sites()["a"].get("relayed_bytes", 0)
                cpu0 = {name: _cpu_seconds(pid) for name, pid in pids.items()}
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    transfer()
                    times.append(time.perf_counter() - start)
                cpu1 = {name: _cpu_seconds(pid) for name, pid in pids.items()}
                relayed1 = fed.sites()["a"].get("relayed_bytes", 0)
            gb = repeats * mb * 2**20 / 1e9
            result["transfer_s"] = statistics.median(times)
            result["transfer_relayed_bytes"] = relayed1 - relayed0
            result["transfer_cpu_s_per_GB"] = {
                name: round((cpu1[name] - cpu0[name]) / gb, 3) for name in pids
            }
            result["crossed_borders_bytes"] = traffic.total
            result["relayed_bytes"] = relayed1
    return result


def measure(mb: int, size: str, repeats: int, net) -> dict:
    """Direct, then outbound-only, on ``net``; relayed / direct ratios of one run."""
    with tempfile.TemporaryDirectory(prefix="federation-relay-") as tmp:
        root = Path(tmp)
        direct = measure_one(root, "direct", mb, size, repeats, net)
        relayed = measure_one(root, "outbound-only", mb, size, repeats, net)
    direct_mbs, relayed_mbs = mb / direct["transfer_s"], mb / relayed["transfer_s"]
    return {
        "network": net.describe(),
        "direct": direct,
        "relayed": relayed,
        "relayed_over_direct": {
            k: round(relayed[k] / direct[k], 2) for k in ("reduction_s", "transfer_s")
        },
        "transfer_MB_per_s": {"direct": round(direct_mbs, 1), "relayed": round(relayed_mbs, 1)},
        "relayed_over_direct_throughput": round(relayed_mbs / direct_mbs, 2),
        # the relay's own cost: what the hub spends per GB beyond scheduling the transfer
        "hub_relay_cpu_s_per_GB": round(
            relayed["transfer_cpu_s_per_GB"]["hub"] - direct["transfer_cpu_s_per_GB"]["hub"], 3
        ),
    }


def _in_namespaces(args: argparse.Namespace, net: Namespaces) -> dict:
    """Run :func:`measure` as the driver in the ``client`` namespace of ``net``."""
    with tempfile.TemporaryDirectory(prefix="federation-relay-out-") as tmp:
        out = Path(tmp) / "shaped.json"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
        cmd = [*net.prefix("client"), sys.executable, "-m", "benchmarks.relay", "_drive",
               "--mb", str(args.mb), "--size", args.size, "--repeats", str(args.repeats),
               "--bandwidth", args.bandwidth, "--out", str(out)]
        subprocess.run(cmd, cwd=str(REPO), env=env, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def _loaded(run: Callable[[], dict]) -> dict:
    """``run()``'s result with the 1, 5 and 15 min load averages before and after it."""
    before = [round(x, 2) for x in os.getloadavg()]
    result = run()
    return {**result, "load": {"before": before,
                               "after": [round(x, 2) for x in os.getloadavg()]}}


def report(args: argparse.Namespace) -> dict:
    """Loopback, then (as root) the shaped network."""
    result = {
        "date": datetime.date.today().isoformat(),
        "hub_relay_and_sites": f"on one machine ({os.cpu_count()} cores)",
        "data_per_site": args.size, "transfer_MB": args.mb, "repeats": args.repeats,
    }
    if args.shaped:
        result["loopback"] = {"skipped": "--shaped given"}
    else:
        result["loopback"] = _loaded(
            lambda: measure(args.mb, args.size, args.repeats, Loopback()))
    ok, why = (False, "--loopback given") if args.loopback else can_use_namespaces()
    if ok:
        net = Namespaces([*ROLES.values(), "hub", "client"], bandwidth=args.bandwidth)
        net.setup()
        try:
            result["shaped"] = _loaded(lambda: _in_namespaces(args, net))
        finally:
            net.teardown()
    else:
        result["shaped"] = {"skipped": why}
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.relay", description=__doc__)
    parser.add_argument("drive", nargs="?", choices=["_drive"],
                        help=argparse.SUPPRESS)  # inside the client namespace
    parser.add_argument("--mb", type=int, default=100, help="size of the transferred array")
    parser.add_argument("--size", default="200MB", help="data per site")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bandwidth", default="100mbit", help="each shaped link, each way")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--loopback", action="store_true", help="skip the shaped network")
    only.add_argument("--shaped", action="store_true", help="skip loopback")
    parser.add_argument("--quick", action="store_true", help="8 MB, 8 MB per site, 1 repeat")
    parser.add_argument("--out", default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.mb, args.size, args.repeats = 8, "8MB", 1
    if args.drive:
        net = Namespaces([*ROLES.values(), "hub", "client"], bandwidth=args.bandwidth)
        emit(measure(args.mb, args.size, args.repeats, net), args.out)
        return
    emit(report(args), args.out)


if __name__ == "__main__":
    main()
