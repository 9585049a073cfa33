"""Starting the clusters the benchmark compares, each process in its role's namespace.

* :class:`FederationCluster` — the real thing: ``dask federation hub`` and
  ``dask federation site CONFIG`` per site (approaches *federation* and *download*).
* :class:`PlainCluster` — a plain ``dask scheduler`` without our plugins and the same
  site workers via :mod:`benchmarks.plain_site`, every worker able to read every
  dataset (approaches *hand-pinned* and *shared-fs*).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the driver dies, even by SIGKILL
    (``ip netns exec`` execs, so the setting reaches the Python process)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # not Linux: rely on stop_all()
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Subprocesses with logs; each in its own session so we stop whole groups."""

    def __init__(self, logdir: Path):
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}

    def spawn(self, name: str, prefix: list[str], *args: str, env: dict | None = None):
        log = open(self.logdir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), full_env.get("PYTHONPATH", "")) if p
        )
        proc = subprocess.Popen(
            [*prefix, sys.executable, *args], stdout=log, stderr=subprocess.STDOUT,
            env=full_env, cwd=str(REPO), start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.logdir / f"{name}.log").read_text(errors="replace")

    def wait_for(self, name: str, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        proc = self.procs[name]
        while time.monotonic() < deadline:
            if text in self.log(name):
                return
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{self.log(name)[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"{name} did not print {text!r}:\n{self.log(name)[-3000:]}")

    def stop(self, *names: str, timeout: float = 20) -> None:
        """Stop the process groups ``names``: SIGTERM to all at once (they shut down in
        parallel), SIGKILL to each group after ``timeout`` s or once its leader exited
        (its worker processes, also if the leader is gone)."""
        names = [name for name in names if name in self.procs]
        for name in names:
            if self.procs[name].poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.procs[name].pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name in names:  # each is forgotten only once reaped (an interrupted stop
            proc = self.procs[name]  # leaves the rest to stop_all())
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            del self.procs[name]

    def stop_all(self, first: list[str] = ()) -> None:
        self.stop(*first)  # stop() skips names it does not hold
        self.stop(*self.procs)


class _Cluster:
    """A scheduler on the hub's address plus processes for every site config."""

    #: process names: the scheduler's, and "<site_prefix>-<site>" for each site
    scheduler_name: str
    site_prefix: str

    def __init__(self, net, procs: Processes, configs: dict[str, Path], port: int):
        self.net, self.procs, self.configs = net, procs, configs
        self.host = net.host("hub")
        self.port = port
        self.address = f"tcp://{self.host}:{port}"

    def site_name(self, site: str) -> str:
        return f"{self.site_prefix}-{site}"

    def wait(self) -> None:
        for site in self.configs:
            self.procs.wait_for(self.site_name(site), "serving")

    def stop(self) -> None:
        self.procs.stop(*[self.site_name(site) for site in self.configs])
        self.procs.stop(self.scheduler_name)


class FederationCluster(_Cluster):
    """``dask federation hub`` plus ``dask federation site`` for every site config."""

    approach_names = ("federation", "download")
    scheduler_name, site_prefix = "fed-hub", "fed"

    def start_scheduler(self) -> None:
        self.procs.spawn(
            self.scheduler_name, self.net.prefix("hub"), "-m", "federation.cli", "hub",
            "--host", self.host, "--port", str(self.port), "--dashboard-address", ":0",
        )

    def start_sites(self) -> None:
        self.procs.wait_for(self.scheduler_name, "Federation hub at")
        for site, cfg in self.configs.items():
            self.procs.spawn(self.site_name(site), self.net.prefix(site), "-m",
                             "federation.cli", "site", str(cfg), "--hub", self.address)


class PlainCluster(_Cluster):
    """Plain ``dask scheduler`` (no federation plugins) and plain site workers that can
    read every site's data."""

    scheduler_name, site_prefix = "plain-scheduler", "plain"

    def start_scheduler(self) -> None:
        self.procs.spawn(
            self.scheduler_name, self.net.prefix("hub"), "-m", "dask", "scheduler",
            "--host", self.host, "--port", str(self.port), "--dashboard-address", ":0",
            # graphs are optimized here; low-level fusion would drop dask.annotate
            env={"DASK_OPTIMIZATION__FUSE__ACTIVE": "False"},
        )

    def start_sites(self) -> None:
        self.procs.wait_for(self.scheduler_name, "Scheduler at")
        for site, cfg in self.configs.items():
            others = [str(c) for s, c in self.configs.items() if s != site]
            self.procs.spawn(self.site_name(site), self.net.prefix(site), "-m",
                             "benchmarks.plain_site", str(cfg), "--scheduler", self.address,
                             "--shared", *others)
