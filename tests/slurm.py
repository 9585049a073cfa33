"""A one-node SLURM (slurmctld + slurmd, Debian's slurm-wlm) for the batch-site tests.

Runs without systemd: munged as the ``munge`` user, both SLURM daemons in the foreground
(``-D``) with their configuration, state and spool in a temporary folder, on free ports.
``ProctrackType=proctrack/linuxproc`` and ``TaskPlugin=task/none`` because the cgroup
plugins need a mounted freezer (and a failed job would drain the only node).

Examples
--------
>>> with OneNodeSlurm(tmp_path) as slurm:             # doctest: +SKIP
...     env = slurm.env                               # SLURM_CONF for sbatch/squeue
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from federation.local import free_port

from .wait import wait

DAEMONS = ("slurmctld", "slurmd", "sbatch", "squeue", "scancel", "munged", "munge", "unmunge")


class SlurmUnavailable(RuntimeError):
    """Why a one-node SLURM cannot run here (the tests skip with it)."""


def _munge_works() -> bool:
    try:
        cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10, check=True)
        subprocess.run(["unmunge"], input=cred.stdout, capture_output=True, timeout=10,
                       check=True)
        return True
    except (OSError, subprocess.SubprocessError):
        return False


def ensure_munge() -> None:
    """Start munged (as ``munge``) unless one already answers; it serves the whole machine."""
    if _munge_works():
        return
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        raise SlurmUnavailable("no /etc/munge/munge.key (apt-get install munge)")
    for folder in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
        os.makedirs(folder, exist_ok=True)
        shutil.chown(folder, "munge", "munge")
    shutil.chown(key, "munge", "munge")
    key.chmod(0o400)
    subprocess.run(["runuser", "-u", "munge", "--", "munged"], check=False, timeout=10)
    try:
        wait(_munge_works, 10, "munged")
    except TimeoutError:
        raise SlurmUnavailable("munged did not start (munge -n | unmunge fails)") from None


def node_memory_mb() -> int:
    """Memory to declare for the node: below what ``slurmd -C`` detects."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=20).stdout
    for part in out.split():
        if part.startswith("RealMemory="):
            return int(int(part.split("=", 1)[1]) * 0.9)
    raise SlurmUnavailable(f"slurmd -C did not report RealMemory: {out!r}")


class OneNodeSlurm:
    """slurmctld and slurmd for this machine, as one node with ``cpus`` CPUs."""

    def __init__(self, workdir: str | os.PathLike, cpus: int = 2):
        self.workdir = Path(workdir)
        self.cpus = cpus
        self.conf = self.workdir / "slurm.conf"
        self.processes: list[subprocess.Popen] = []

    @property
    def env(self) -> dict[str, str]:
        """The environment in which ``sbatch``/``squeue`` use this SLURM."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def write_conf(self) -> None:
        host = socket.gethostname()
        for folder in ("state", "spool", "log"):
            (self.workdir / folder).mkdir(parents=True, exist_ok=True)
        w = self.workdir
        self.conf.write_text(f"""\
ClusterName=federation-test
SlurmctldHost={host}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
AuthType=auth/munge
StateSaveLocation={w}/state
SlurmdSpoolDir={w}/spool
SlurmctldPidFile={w}/slurmctld.pid
SlurmdPidFile={w}/slurmd.pid
SlurmctldLogFile={w}/log/slurmctld.log
SlurmdLogFile={w}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MailProg=/bin/true
MinJobAge=300
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
KillWait=5
NodeName={host} CPUs={self.cpus} Sockets=1 CoresPerSocket={self.cpus} ThreadsPerCore=1 \
RealMemory={node_memory_mb()} State=UNKNOWN
PartitionName=compute Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")

    def start(self, timeout: float = 30) -> None:
        missing = [d for d in DAEMONS if shutil.which(d) is None]
        if missing:
            raise SlurmUnavailable(f"not installed: {', '.join(missing)} "
                                   "(apt-get install slurm-wlm munge)")
        if os.geteuid() != 0:
            raise SlurmUnavailable("starting slurmd needs root")
        ensure_munge()
        self.write_conf()
        for daemon in ("slurmctld", "slurmd"):
            self.processes.append(subprocess.Popen(
                [daemon, "-D", "-f", str(self.conf)], env=self.env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            ))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.processes):
                break
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env,
                                 capture_output=True, text=True).stdout.strip()
            if out in ("idle", "mixed", "allocated"):
                return
            time.sleep(0.3)
        log = "".join(
            (self.workdir / "log" / f"{d}.log").read_text(errors="replace")[-1500:]
            for d in ("slurmctld", "slurmd") if (self.workdir / "log" / f"{d}.log").exists()
        )
        self.stop()
        raise SlurmUnavailable(f"the one-node SLURM did not become idle:\n{log}")

    def jobs(self, name: str | None = None) -> list[tuple[str, str]]:
        """(job id, state) of queued and running jobs, optionally of one job name."""
        args = ["squeue", "-h", "-o", "%i %T"] + (["-n", name] if name else [])
        out = subprocess.run(args, env=self.env, capture_output=True, text=True,
                             check=True).stdout
        return [tuple(line.split()) for line in out.splitlines() if line.strip()]

    def stop(self) -> None:
        if self.processes:
            subprocess.run(["scancel", "--full", "-u", "root"], env=self.env,
                           capture_output=True, check=False)
        for proc in self.processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.processes = []

    def __enter__(self) -> OneNodeSlurm:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
