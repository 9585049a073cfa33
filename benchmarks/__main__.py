"""``python -m benchmarks run [--quick] [--loopback] ...`` — see benchmarks/README.md."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dask.utils import parse_bytes

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SITE_ROLES = ["awi", "geomar", "dkrz", "deep"]


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="build the federation, run every workload x approach")
    r.add_argument("--quick", action="store_true", help="~100 MiB per site instead of 1 GiB")
    r.add_argument("--loopback", action="store_true",
                   help="no namespaces or shaping: everything on 127.0.0.1")
    r.add_argument("--size", default=None,
                   help="data per site awi/geomar/dkrz (default 1GiB, --quick 100MiB)")
    r.add_argument("--chunk-days", type=int, default=30, help="days per storage chunk")
    r.add_argument("--memory-limit", default="1GiB", help="per worker of awi/geomar/dkrz")
    r.add_argument("--deep-memory-limit", default="400MiB",
                   help="per worker of the small-memory site 'deep'")
    r.add_argument("--deep-size", default=None,
                   help="data at 'deep' (default 4x its memory limit; --quick: --size)")
    r.add_argument("--bandwidth", default="100mbit", help="every link, each way (tc rate)")
    r.add_argument("--rtt", type=float, nargs="+", default=None, metavar="MS",
                   help="RTT sweep: run the matrix at each RTT (ms) through the delay router "
                        "(benchmarks/delay.py), plus the site-local bound; needs root")
    r.add_argument("--jitter", type=float, default=0.0, metavar="MS",
                   help="± uniform jitter of the RTT (ms) with --rtt")
    r.add_argument("--contention", type=int, default=0, metavar="N",
                   help="contention mode: N busy processes pinned round-robin to the cores "
                        "(taskset) for the whole run, like a shared login node")
    r.add_argument("--data-dir", default=str(HERE / ".data"), help="generated data cache")
    r.add_argument("--results-dir", default=str(HERE / "results"))
    r.add_argument("--name", default=None, help="results file stem (default: the date)")
    r.add_argument("--workloads", nargs="+", default=None)
    r.add_argument("--approaches", nargs="+", default=None)
    r.add_argument("--overhead-tasks", type=int, default=None,
                   help="tasks of the scheduler-overhead graph (default 100000; 0: skip)")
    r.add_argument("--repeats", type=int, default=1,
                   help="runs of each workload × approach (× RTT); the report shows the "
                        "median and the spread")
    r.add_argument("--overhead-repeats", type=int, default=1)
    r.add_argument("--no-profile", action="store_true", help="skip the profiled run")
    r.add_argument("--profile-tasks", type=int, default=20_000,
                   help="graph size of the diagnostic runs (no site queue, profiled)")
    r.add_argument("--no-diagnose", action="store_true",
                   help="only the off/on runs of the overhead case")
    r.add_argument("--batch", default="32MiB", help="download batch size")
    r.add_argument("--note", action="append", default=[], help="extra note for the report")
    d = sub.add_parser("_drive", help=argparse.SUPPRESS)
    d.add_argument("spec")
    d.add_argument("out")
    rep = sub.add_parser("report", help="re-render markdown and plot from a results JSON")
    rep.add_argument("json")
    return p


def start_contention(n: int) -> list[subprocess.Popen]:
    """``n`` CPU-bound processes, each pinned to one core (round-robin), at normal
    priority: the fixed load of the contention mode."""
    cores = sorted(os.sched_getaffinity(0))
    return [subprocess.Popen(["taskset", "-c", str(cores[i % len(cores)]), sys.executable,
                              "-c", "while True: pass"]) for i in range(n)]


def run(args: argparse.Namespace) -> dict:
    from federation.protocol import site_of_ref

    from . import data as bdata
    from . import report
    from .approaches import APPROACHES
    from .network import Loopback, Namespaces, can_use_namespaces
    from .workloads import WORKLOADS

    started = time.time()
    load_before = os.getloadavg()[0]
    size = parse_bytes(args.size or ("100MiB" if args.quick else "1GiB"))
    memory_limit = parse_bytes(args.memory_limit)
    deep_limit = parse_bytes(args.deep_memory_limit)
    deep_size = parse_bytes(args.deep_size) if args.deep_size else (
        size if args.quick else 4 * deep_limit)
    workloads = args.workloads or list(WORKLOADS)
    # only the sites the chosen workloads read are started (and their data made)
    read = {site_of_ref(ref) for w in workloads for ref, _, _ in WORKLOADS[w].inputs}
    sites = [site for site in SITE_ROLES if site in read]
    sizes = {site: deep_size if site == "deep" else size for site in sites}
    limits = {site: deep_limit if site == "deep" else memory_limit for site in sites}
    overhead_tasks = args.overhead_tasks
    if overhead_tasks is None:
        overhead_tasks = 20_000 if args.quick else 100_000
    mode, why = "loopback", "--loopback given"
    if not args.loopback:
        ok, why = can_use_namespaces()
        mode = "netns" if ok else "loopback"
    if mode == "loopback":
        if args.rtt:
            raise SystemExit(f"--rtt needs the namespace network (root), but: {why}")
        print(f"Using loopback (127.0.0.1, no shaping): {why}.", flush=True)
    roles = ["hub", *sites, "client"]
    net = Namespaces(roles, bandwidth=args.bandwidth,
                     rtt_ms=args.rtt[0] if args.rtt else None,
                     jitter_ms=args.jitter) if mode == "netns" else Loopback()

    data_dir = Path(args.data_dir).resolve()
    paths = bdata.prepare(data_dir, sizes, args.chunk_days)
    workdir = Path(tempfile.mkdtemp(prefix="fedbench-"))
    configs = {}
    from federation.local import write_site_config

    for site, path in paths.items():
        kind = bdata.SITES[site][0]
        (workdir / "scratch" / site).mkdir(parents=True, exist_ok=True)
        configs[site] = str(write_site_config(
            workdir / f"{site}.yaml", site=site, workers=1, nthreads=2,
            memory_limit=int(limits[site]), local_directory=str(workdir / "scratch" / site),
            datasets={kind: {"path": str(path), "description": f"benchmark {kind}"}},
        ))
    print(f"warming the page cache: {bdata.warm_page_cache(paths) / 2**20:,.0f} MiB", flush=True)
    from .cluster import free_port

    spec = {
        "mode": mode, "roles": roles, "bandwidth": args.bandwidth, "sites": sites,
        "configs": configs, "workdir": str(workdir), "data_dir": str(data_dir),
        "hub_port": 8786 if mode == "netns" else free_port(),
        "plain_port": 8796 if mode == "netns" else free_port(),
        "workloads": workloads,
        # the sweep also asks for the limit, not only the peers
        "approaches": args.approaches or [*APPROACHES, *(["site-local"] if args.rtt else [])],
        "rtts": args.rtt, "repeats": args.repeats,
        "batch_bytes": parse_bytes(args.batch),
        "overhead_tasks": overhead_tasks, "overhead_repeats": args.overhead_repeats,
        "profile": not args.no_profile, "profile_tasks": args.profile_tasks,
        "diagnose": not args.no_diagnose,
    }
    out = workdir / "driver.json"
    previous = signal.signal(signal.SIGTERM, _sigterm)
    child = None
    busy = []
    try:
        busy = start_contention(args.contention)
        net.setup()
        spec["router_control"] = getattr(net, "control_path", "")
        (workdir / "spec.json").write_text(json.dumps(spec, indent=1))
        if mode == "netns":
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
            child = subprocess.Popen(
                [*net.prefix("client"), sys.executable, "-m", "benchmarks", "_drive",
                 str(workdir / "spec.json"), str(out)], cwd=str(REPO), env=env,
            )
            if child.wait() != 0:
                raise SystemExit(f"benchmark driver failed (exit {child.returncode}); "
                                 f"logs in {workdir / 'logs'}")
            driven = json.loads(out.read_text())
        else:
            from .runner import drive

            driven = drive(spec)
    finally:
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        net.teardown()
        for proc in busy:
            proc.kill()
            proc.wait()
        signal.signal(signal.SIGTERM, previous)

    import dask
    import distributed
    import psutil

    date = datetime.date.today().isoformat()
    stem = args.name or date + ("-rtt" if args.rtt else "") + (
        f"-busy{args.contention}" if args.contention else "") + ("-quick" if args.quick else "") + (
        "-loopback" if mode == "loopback" else "")
    sizes = {site: bdata.du(p) for site, p in paths.items()}
    rtt_note = (
        f"Latency from the userspace delay router (benchmarks/delay.py, TUN devices; the "
        f"kernel has no netem) on every path between two roles, at RTT "
        f"{', '.join(f'{r:g}' for r in args.rtt)} ms in turn, the clusters kept running."
        if args.rtt else
        "No latency is modelled in this run (links are bandwidth-shaped only, RTT < 0.5 ms); "
        "`--rtt 0 20 40 80` runs the RTT sweep through the delay router.")
    notes = [
        rtt_note,
        f"{os.cpu_count()} CPU cores shared by all processes (hub and scheduler, "
        f"{2 * len(sites)} site workers: the federation's and plain Dask's, client): "
        "absolute times are noisy; ratios within one run matter.",
        "download: each workload fetches what it needs afresh (no cache between workloads).",
        "shared-fs: reads of another site's files are free here (local disk); through a "
        "real shared filesystem over the WAN they would cross the links "
        "(see remote reads).",
        *([f"Contention mode: {args.contention} busy processes pinned round-robin to the "
            f"{os.cpu_count()} cores (taskset) ran beside the sites for the whole run."]
          if args.contention else []),
        *args.note,
    ]
    results = {
        "meta": {
            "date": date, "command": "python -m benchmarks " + shlex.join(sys.argv[1:]),
            "mode": mode, "network": net.describe(), "cpus": os.cpu_count(),
            "memory_gib": psutil.virtual_memory().total / 2**30,
            "python": platform.python_version(), "dask": dask.__version__,
            "distributed": distributed.__version__, "size_per_site": size,
            "bytes_on_disk": sizes, "datasets": bdata.describe_sites(sites),
            "chunk_days": args.chunk_days, "memory_limit": memory_limit,
            "deep_size": deep_size, "deep_memory_limit": deep_limit,
            "contention": args.contention,
            "memory_ratio": deep_size / deep_limit, "duration_s": time.time() - started,
            # what else ran shows in the load average (1 min) before and after the run
            "load_note": f"Load average {load_before:.1f} before the run, "
                         f"{os.getloadavg()[0]:.1f} after.",
            "notes": notes,
        },
        **driven,
    }
    written = report.write(results, Path(args.results_dir), stem)
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)  # logs and configs; kept if the run failed
    print(report.markdown(results))
    print("written:", ", ".join(str(p) for p in written.values()))
    return results


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.cmd == "run":
        run(args)
    elif args.cmd == "_drive":
        from .runner import drive

        signal.signal(signal.SIGTERM, _sigterm)
        spec = json.loads(Path(args.spec).read_text())
        results = drive(spec, log=lambda *a: print(*a, flush=True))
        Path(args.out).write_text(json.dumps(results, default=str))
    elif args.cmd == "report":
        from . import report

        path = Path(args.json)
        results = json.loads(path.read_text())
        report.write(results, path.parent, path.stem)
        print(report.markdown(results))


if __name__ == "__main__":
    main()
