"""A site's workers as batch jobs (dask-jobqueue), scaled by the hub's demand for the site.

With ``cluster: {type: slurm, ...}`` in its config the site process starts no workers
itself. It runs a dask-jobqueue cluster whose scheduler is the federation's hub: each
job runs ``dask federation site-worker CONFIG HUB ...`` (same labels, read plugin, strict
mode, TLS and relay as the workers the site starts itself), and the workers join the hub.

* **Fixed size** (no ``adapt:``): ``workers:`` workers, replaced when a job ends.
* **Adaptive** (``adapt: {minimum, maximum}``): :class:`SiteAdaptive`, distributed's
  ``Adaptive`` with a target from the hub's demand for this site (its parked reads, the
  tasks waiting for it and those it processes; ``federation_site_demand``). Scaling down
  retires workers through the hub (``federation_retire_site_workers``), which moves
  their data only to other workers of the same site.
* **Visible.** :meth:`SiteJobs.status` (requested, pending, running and failed workers,
  the batch system's reason for pending jobs, the last failure) travels with the
  heartbeat to the hub, into ``fed.sites()``, the dashboard and the HTTP API.
* **Failures.** The batch system's verdict on a test submission (SLURM:
  ``sbatch --test-only``) stops the site at start naming the key to fix. A job that ends
  without its workers ever joining is a failed start: it is reported and, after
  :data:`MAX_FAILED_STARTS` in a row, the site stops submitting jobs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import shlex
import shutil
import subprocess
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from distributed.deploy import Adaptive
from distributed.deploy.spec import ProcessInterface
from distributed.security import Security

from .config import ConfigError, SiteConfig
from .protocol import RETIRE_SITE_WORKERS, SITE_DEMAND, call

logger = logging.getLogger("federation.jobs")

#: dask-jobqueue's cluster class per ``cluster.type``
CLUSTER_CLASSES = {
    "slurm": "SLURMCluster", "pbs": "PBSCluster", "lsf": "LSFCluster", "sge": "SGECluster",
}
#: dask-jobqueue's name of the account option (``cluster.account``) per batch system
ACCOUNT_OPTION = {"slurm": "account", "pbs": "account", "lsf": "project", "sge": "project"}
#: failed starts in a row after which the site stops submitting jobs
MAX_FAILED_STARTS = 3
#: SLURM job states after which a job's workers are gone
ENDED = {
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
    "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT",
}
#: what ``sbatch`` says about a rejected job -> the key to fix
SLURM_REJECTIONS = {
    "invalid account": "cluster.account",
    "invalid partition": "cluster.queue",
    "time limit": "cluster.walltime",
    "memory": "cluster.memory",
    "node configuration is not available": "cluster.cores / cluster.memory / job_extra",
    "invalid qos": "cluster.job_extra",
}
#: seconds a submitted job may be missing from ``squeue`` before it counts as ended
#: (a job appears there a moment after ``sbatch`` returns)
GRACE = 5.0


class HubScheduler(ProcessInterface):
    """The scheduler slot of dask-jobqueue's cluster, filled by the federation's hub.

    dask-jobqueue starts a scheduler of its own; a site's jobs must join the hub instead,
    so this stands in for it: its ``address`` is the hub's, and closing it leaves the hub
    alone. Scheduler options dask-jobqueue passes (dashboard, interface, ...) do not apply.
    """

    def __init__(self, address: str, **_scheduler_options: Any):
        super().__init__()
        self.address = address


def demand_target(demand: dict[str, Any], threads_per_worker: int) -> int:
    """Workers a site needs for the hub's ``demand``: one thread per task that waits
    for it or runs there, and at least one worker while it holds results in memory."""
    need = math.ceil(demand["tasks"] / threads_per_worker)
    return max(need, 1 if demand["held"] else 0)


class SiteAdaptive(Adaptive):
    """distributed's ``Adaptive``, driven by the hub's demand for one site.

    ``target`` asks the hub for the site's demand (``federation_site_demand``);
    ``workers_to_close`` picks the site's least busy workers; ``scale_down`` retires
    them through the hub so that their data moves only to the site's other workers.
    """

    def __init__(self, cluster: Any, *, jobs: SiteJobs, **kwargs: Any):
        self.jobs = jobs
        super().__init__(cluster, **kwargs)

    async def target(self) -> int:
        demand = await self.jobs.demand()
        target = demand_target(demand, self.jobs.threads_per_worker)
        if self.jobs.halted:  # jobs keep failing to start: keep what runs, ask for no more
            target = min(target, len(self.jobs.running_workers()))
        return target

    async def workers_to_close(self, target: int) -> list[str]:
        workers = self.jobs.last_demand.get("workers", {})
        mine = [name for name in self.cluster.plan if name in workers]
        # idle workers first, then those holding the fewest results
        mine.sort(key=lambda n: (workers[n]["processing"], workers[n]["keys"], n))
        return mine[: max(len(self.cluster.plan) - target, 0)]

    async def scale_down(self, workers: list[str]) -> None:
        if not workers:
            return
        connected = self.jobs.running_workers()
        # queued jobs hold no data: cancel them; running ones retire through the hub
        queued = [w for w in workers if w not in connected]
        running = [w for w in workers if w in connected]
        # before retiring: their jobs close once their workers leave (jobs the hub keeps
        # are watched again on the next check)
        self.jobs.closing(workers)
        retired = await self.jobs.retire(running) if running else []
        if queued or retired:
            await self.cluster.scale_down(queued + retired)

    async def scale_up(self, n: int) -> None:
        await self.jobs.scale(n)


class SiteJobs:
    """The site's workers as jobs of a batch system, fixed or adaptive.

    Parameters
    ----------
    cfg:
        The site configuration (``cluster:``, ``adapt:``, ``workers:``).
    hub:
        The hub's address; the jobs' workers join it.
    config_file:
        The site's config file, which ``dask federation site-worker`` in each job reads
        (so it must be on a filesystem the compute nodes share).
    session:
        The site process's session id; it makes job and worker names unique.
    security:
        The site's TLS (its certificate files, which the jobs' workers use too).
    relay:
        The relay settings of an outbound-only site (``None`` for direct sites).
    worker_env:
        Secrets the jobs' workers need from the site's registration (the hub's capability
        key, the session, the relay token), exported in each job script — never on the
        command line, where every user of the node could read them.
    """

    def __init__(
        self,
        cfg: SiteConfig,
        *,
        hub: str,
        config_file: str | None,
        session: str,
        security: Security | None = None,
        relay: dict[str, str] | None = None,
        worker_env: dict[str, str] | None = None,
    ):
        if config_file is None:
            raise ConfigError("cluster: batch jobs read the site's config file; start the site "
                              "with 'dask federation site CONFIG'")
        self.cfg = cfg
        self.hub = hub
        self.config_file = str(Path(config_file).resolve())
        self.name = f"{cfg.site}-{session[:6]}"
        self.security = security
        self.relay = relay
        self.worker_env = worker_env or {}
        self.cluster: Any = None
        self.adaptive: SiteAdaptive | None = None
        self.last_demand: dict[str, Any] = {}
        self.threads_per_worker = cfg.cluster.cores // cfg.cluster.processes
        #: job name -> monotonic time it was submitted / its workers were first seen
        self.submitted: dict[str, float] = {}
        self.joined: set[str] = set()
        #: job id -> job name, for the jobs whose workers joined and that have not ended
        self.running_jobs: dict[str, str] = {}
        self.failed = 0
        self.failed_in_a_row = 0
        self.ended = 0
        self.last_error: str | None = None
        self.halted = False
        #: job id -> (state, reason) from the batch system
        self.queue: dict[str, tuple[str, str]] = {}
        self._watch: asyncio.Task | None = None
        self._lost_hub = asyncio.Event()

    # -- set-up --------------------------------------------------------------------------

    def job_options(self) -> dict[str, Any]:
        """Keyword arguments of dask-jobqueue's job (and cluster) class."""
        c, cfg = self.cfg.cluster, self.cfg
        extra = ["--nworkers", str(c.processes)]
        if self.security is not None and self.security.tls_ca_file:
            extra += ["--tls-ca-file", self.security.tls_ca_file,
                      "--tls-cert", self.security.tls_worker_cert,
                      "--tls-key", self.security.tls_worker_key]
        prologue = list(c.job_script_prologue)
        # not on the command line, where every user of the node could read them
        prologue += [f"export {k}={shlex.quote(v)}" for k, v in sorted(self.worker_env.items())]
        if self.relay is not None:
            extra += ["--relay", self.relay["federation.relay.address"]]
            if cfg.listen_host:
                extra += ["--listen-host", cfg.listen_host]
        options = {
            "cores": c.cores, "memory": c.memory, "processes": c.processes,
            "queue": c.queue, ACCOUNT_OPTION[c.type]: c.account, "walltime": c.walltime,
            "job_extra_directives": list(c.job_extra), "job_script_prologue": prologue,
            "interface": c.interface, "log_directory": c.log_directory,
            "local_directory": cfg.local_directory, "job_name": f"fed-{cfg.site}",
            # workers whose hub is gone for a minute stop, and their job ends
            "death_timeout": 60,
            "worker_command": f"federation.cli site-worker {shlex.quote(self.config_file)}",
            "worker_extra_args": extra,
        }
        if c.python:
            options["python"] = c.python
        return options

    def _cluster_class(self) -> Any:
        import dask_jobqueue

        return getattr(dask_jobqueue, CLUSTER_CLASSES[self.cfg.cluster.type])

    def job_script(self) -> str:
        """The script of one job (as submitted, but for the worker name)."""
        job_cls = self._cluster_class().job_cls
        try:
            job = job_cls(scheduler=self.hub, name=f"{self.name}-0", **self.job_options())
        except (ValueError, TypeError) as e:
            raise ConfigError(f"cluster: dask-jobqueue refused the options: {e}") from None
        return job.job_script()

    def make_cluster(self) -> Any:
        """The dask-jobqueue cluster, with the hub as its scheduler (in a running loop)."""
        cluster = self._cluster_class()(
            **self.job_options(), scheduler_cls=HubScheduler,
            scheduler_options={"address": self.hub}, name=self.name, asynchronous=True,
        )
        # the hub is not the site's to stop; the site's certificate opens its connection
        cluster.shutdown_scheduler = False
        if self.security is not None:
            cluster.security = self.security
        return cluster

    async def start(self) -> None:
        """Connect the cluster to the hub, check a job with the batch system, start the
        fixed workers or the adaptive loop, and watch the jobs."""
        submit = self._cluster_class().job_cls.submit_command.split()[0]
        if shutil.which(submit) is None:
            raise ConfigError(
                f"cluster.type: {self.cfg.cluster.type} jobs are submitted with {submit!r}, "
                "which is not on this machine's PATH; run the site where jobs can be "
                "submitted (a login node), or fix cluster.type"
            )
        await self.check_submission()
        self.cluster = self.make_cluster()
        await self.cluster
        if self.cfg.adapt is not None:
            a = self.cfg.adapt
            self.adaptive = self.cluster.adapt(
                Adaptive=SiteAdaptive, jobs=self, minimum=a.minimum, maximum=a.maximum,
                interval=a.interval, wait_count=a.wait_count,
            )
        else:
            await self.scale(self.cfg.workers)
        self._watch = asyncio.create_task(self._watch_jobs())

    async def check_submission(self) -> None:
        """Let the batch system judge one job before any runs (SLURM: ``sbatch
        --test-only``); a rejection stops the site naming the key to fix."""
        script = self.job_script()
        if self.cfg.cluster.type != "slurm":
            return
        proc = await asyncio.create_subprocess_exec(
            "sbatch", "--test-only", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _, err = await proc.communicate(script.encode())
        if proc.returncode == 0:
            return
        message = err.decode(errors="replace").strip()
        key = next((k for text, k in SLURM_REJECTIONS.items() if text in message.lower()),
                   "cluster (queue, account, walltime, cores, memory, job_extra)")
        raise ConfigError(f"{key}: SLURM refuses the site's jobs: {message}; fix {key}")

    # -- scaling -------------------------------------------------------------------------

    async def scale(self, n: int) -> None:
        """Ask for ``n`` workers; a refused submission is a failed start."""
        if self.halted:
            n = min(n, len(self.running_workers()))
        self.cluster.scale(n)
        await self._submit()

    async def _submit(self) -> None:
        """Submit the jobs of the plan that have none (new, or their job ended)."""
        try:
            await self.cluster
        except Exception as e:  # sbatch/qsub refused a job
            self._drop_unsubmitted()
            self._failed_start(None, _submit_error(e))
        now = time.monotonic()
        for name, job in self.cluster.workers.items():
            if job.job_id and name not in self.submitted:
                self.submitted[name] = now

    def _drop_unsubmitted(self) -> None:
        for name, job in list(self.cluster.workers.items()):
            if not job.job_id:
                self.cluster.workers.pop(name, None)
                self.cluster.worker_spec.pop(name, None)

    async def demand(self) -> dict[str, Any]:
        """The hub's demand for this site (see ``scheduler_plugins.scaling``)."""
        self.last_demand = await call(
            self.cluster.scheduler_comm, SITE_DEMAND, site=self.cfg.site
        )
        return self.last_demand

    async def retire(self, workers: list[str]) -> list[str]:
        """Retire whole jobs holding ``workers`` through the hub (data stays in the
        site); returns the names of the workers retired."""
        processes = self.cfg.cluster.processes
        jobs = {_job_of(w, processes) for w in workers}
        names = [w for w in self.running_workers() if _job_of(w, processes) in jobs]
        retired = await call(
            self.cluster.scheduler_comm, RETIRE_SITE_WORKERS, site=self.cfg.site, names=names
        )
        kept = {_job_of(w, processes) for w in set(names) - set(retired)}
        if kept:
            logger.info("Site %s keeps job(s) %s: their data has no other worker of the "
                        "site to move to", self.cfg.site, sorted(kept))
        # a job ends only when all of its workers retired
        return [w for w in retired if _job_of(w, processes) not in kept]

    # -- watching the jobs ---------------------------------------------------------------

    def running_workers(self) -> set[str]:
        """Workers of this site's jobs connected to the hub."""
        seen = {w["name"] for w in self.cluster.scheduler_info["workers"].values()}
        return seen & self.cluster.plan

    async def _watch_jobs(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            task = getattr(self.cluster, "_watch_worker_status_task", None)
            if task is not None and task.done():  # the hub went away
                self._lost_hub.set()
                return
            try:
                await self.check_jobs()
            except Exception as e:  # keep watching; a batch command may fail for a while
                logger.warning("Site %s: checking its jobs failed: %s", self.cfg.site, e)

    async def check_jobs(self) -> None:
        """Find jobs whose workers joined, jobs that ended, and failed starts."""
        processes = self.cfg.cluster.processes
        now = time.monotonic()
        for name in self.running_workers():
            job = _job_of(name, processes)
            if job not in self.joined:
                self.joined.add(job)
                self.failed_in_a_row = 0
        ids = {job.job_id: name for name, job in self.cluster.workers.items() if job.job_id}
        for name in ids.values():  # also jobs the adaptive loop submitted
            self.submitted.setdefault(name, now)
        for job_id, name in ids.items():
            if name in self.joined:
                self.running_jobs.setdefault(job_id, name)
        # a job whose workers left the hub is closed by dask-jobqueue itself, often before
        # the queue shows it ended: it ended all the same
        for job_id in [j for j in self.running_jobs if j not in ids]:
            self._ended(job_id, self.running_jobs.pop(job_id), "its workers left")
        self.queue = await queue_states(self.cfg.cluster.type, list(ids))
        if self.queue is None:
            self.queue = {}
            return  # this batch system's queue is not read: no failure detection
        lost = False
        for job_id, name in ids.items():
            state, _ = self.queue.get(job_id, ("", ""))
            missing = not state and now - self.submitted.get(name, now) > GRACE
            if state not in ENDED and not missing:
                continue
            job = self.cluster.workers.pop(name)
            if self.running_jobs.pop(job_id, None):  # ran and ended: cancelled, out of
                self._ended(job_id, name, state or "gone")  # time, node lost
                lost = True
            else:
                self.cluster.worker_spec.pop(name, None)
                self._failed_start(job_id, f"job {job_id} ended ({state or 'gone'}) before "
                                   f"its workers joined{self._log_tail(job_id)}")
            with suppress(Exception):
                await job.close()
        fixed = self.adaptive is None and not self.halted
        if fixed and len(self.cluster.plan) < self.cfg.workers:
            await self.scale(self.cfg.workers)  # failed starts left the plan short
        elif lost or set(self.cluster.worker_spec) - set(self.cluster.workers):
            # the plan holds jobs that ended (seen here, or closed by dask-jobqueue when
            # their workers left the hub): submit them again
            await self._submit()

    def closing(self, workers: list[str]) -> None:
        """The jobs of ``workers`` are being closed on purpose (scaled down): when they
        go, they did not end."""
        jobs = {_job_of(w, self.cfg.cluster.processes) for w in workers}
        for job_id, name in list(self.running_jobs.items()):
            if name in jobs:
                del self.running_jobs[job_id]

    def _ended(self, job_id: str, name: str, why: str) -> None:
        self.ended += 1
        logger.warning("Site %s: job %s (%s) ended (%s); starting another",
                       self.cfg.site, job_id, name, why)

    def _failed_start(self, job_id: str | None, why: str) -> None:
        self.failed += 1
        self.failed_in_a_row += 1
        self.last_error = why
        if self.failed_in_a_row >= MAX_FAILED_STARTS and not self.halted:
            self.halted = True
            logger.error(
                "Site %s: %d jobs in a row failed to start; no more jobs are submitted until "
                "the site restarts. Last: %s", self.cfg.site, self.failed_in_a_row, why)
        else:
            logger.warning("Site %s: a job failed to start: %s", self.cfg.site, why)

    def _log_tail(self, job_id: str) -> str:
        """The end of the job's error output, if the jobs write to ``log_directory``."""
        folder = self.cfg.cluster.log_directory
        if not folder:
            return "; set cluster.log_directory to see the job's output"
        for path in Path(folder).glob(f"*{job_id}.err"):
            text = path.read_text(errors="replace").strip().splitlines()
            if text:
                return f": {' | '.join(text[-3:])}"
        return ""

    # -- reporting -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Requested, pending and running workers, failures, and why jobs wait."""
        requested = len(self.cluster.plan) if self.cluster is not None else 0
        running = len(self.running_workers()) if self.cluster is not None else 0
        reasons = sorted({reason for state, reason in self.queue.values()
                          if state == "PENDING" and reason and reason != "None"})
        out = {
            "type": self.cfg.cluster.type,
            "requested": requested, "running": running, "pending": max(requested - running, 0),
            "failed": self.failed, "ended": self.ended, "halted": self.halted,
            "pending_reason": ", ".join(reasons) or None, "error": self.last_error,
            "minimum": self.cfg.adapt.minimum if self.cfg.adapt else self.cfg.workers,
            "maximum": self.cfg.adapt.maximum if self.cfg.adapt else self.cfg.workers,
            "adaptive": self.cfg.adapt is not None,
        }
        return out

    def describe(self) -> str:
        c = self.cfg.cluster
        size = (f"adaptive {self.cfg.adapt.minimum}-{self.cfg.adapt.maximum} workers"
                if self.cfg.adapt else f"{self.cfg.workers} worker(s)")
        return f"{size} as {c.type} jobs ({c.cores} cores, {c.memory}, {c.processes} per job)"

    async def finished(self) -> None:
        """Return when the hub went away (its jobs' workers stop then too)."""
        await self._lost_hub.wait()

    async def close(self) -> None:
        """Cancel the jobs and leave the hub running."""
        if self._watch is not None:
            self._watch.cancel()
        if self.cluster is not None:
            with suppress(Exception):
                await self.cluster.close()
        self._lost_hub = asyncio.Event()


def _job_of(worker: str, processes: int) -> str:
    """The job a worker belongs to: with several processes per job, workers are named
    ``<job>-0``, ``<job>-1``, ..."""
    return worker.rsplit("-", 1)[0] if processes > 1 else worker


def _submit_error(e: Exception) -> str:
    """The batch system's own words from dask-jobqueue's error."""
    lines = [ln for ln in str(e).splitlines() if "error" in ln.lower() and ln.strip()]
    return "submission refused: " + (" | ".join(lines[-2:]) or str(e).strip()[:300])


async def queue_states(kind: str, job_ids: list[str]) -> dict[str, tuple[str, str]] | None:
    """job id -> (state, reason) as the batch system reports them; ``None`` where this
    batch system's queue is not read (only SLURM's is)."""
    if kind != "slurm":
        return None
    if not job_ids:
        return {}
    proc = await asyncio.create_subprocess_exec(
        "squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%i|%T|%r",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0 and b"Invalid job id" not in err:
        raise RuntimeError(f"squeue failed: {err.decode(errors='replace').strip()}")
    states = {}
    for line in out.decode().splitlines():
        job_id, state, reason = (line.split("|") + ["", ""])[:3]
        states[job_id.strip()] = (state.strip(), reason.strip())
    return states
