"""Sites whose workers are batch jobs: a real one-node SLURM, real jobs, a real hub.

The SLURM tests skip (with the reason) where slurm-wlm/munge are missing or the daemons
cannot start; CI installs them (.ci/run).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
from distributed.utils_test import gen_cluster

from federation.config import ConfigError, parse_site_config
from federation.labels import worker_resources
from federation.local import LocalFederation
from scheduler_plugins import install
from scheduler_plugins.dashboard.components.sites import batch_jobs

from .conftest import make_site
from .slurm import OneNodeSlurm, SlurmUnavailable
from .wait import wait

SLURM_SITE = {"type": "slurm", "cores": 1, "memory": "1GiB", "walltime": "00:10:00",
              "log_directory": "logs"}


# -- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize("text, names", [
    ("cluster: {type: slurmx}", ["cluster.type", "slurm"]),
    ("cluster: {type: slurm}", ["cluster", "cores and memory"]),
    ("cluster: {type: slurm, cores: 4, memory: 8GiB, processes: 3}", ["multiple of processes"]),
    ("cluster: {type: slurm, cores: 4, memory: lots}", ["cluster.memory", "64GiB"]),
    ("cluster: {type: slurm, cores: 4, memory: 8GiB, qeue: x}", ["cluster.qeue", "queue"]),
    ("adapt: {minimum: 0, maximum: 2}", ["adapt needs", "cluster.type"]),
    ("cluster: {type: slurm, cores: 1, memory: 1GiB}\nadapt: {minimum: 3, maximum: 2}",
     ["minimum (3) is above maximum (2)"]),
    ("cluster: {type: kubernetes, cores: 1, memory: 1GiB}", ["needs image"]),
    ("cluster: {queue: compute}", ["only apply to batch systems"]),
])
def test_cluster_config_errors_name_the_key(text, names):
    with pytest.raises(ConfigError) as err:
        parse_site_config(f"site: awi\n{text}\n")
    for name in names:
        assert name in str(err.value)


def test_cluster_config_of_the_issue():
    cfg = parse_site_config("""
site: awi
cluster:
  type: slurm
  queue: compute
  account: ab0123
  walltime: "02:00:00"
  cores: 16
  memory: 64GiB
  processes: 4
  job_extra: ["--constraint=256G"]
adapt: {minimum: 0, maximum: 20}
""")
    assert (cfg.cluster.cores, cfg.cluster.processes, cfg.adapt.maximum) == (16, 4, 20)


def test_job_script_carries_the_site(tmp_path):
    """The job runs 'dask federation site-worker' with the site's config, TLS files and
    (outbound-only) the relay, its token not on the command line."""
    from federation.jobs import SiteJobs
    from federation.security import init_ca, issue, security

    init_ca(tmp_path)
    cert, key = issue(tmp_path, "site", "awi")
    sec = security(str(tmp_path / "ca.pem"), str(cert), str(key))
    config = tmp_path / "awi.yaml"
    config.write_text("site: awi\n")
    cfg = parse_site_config("""
site: awi
cluster: {type: slurm, queue: compute, account: ab0123, cores: 16, memory: 64GiB,
          processes: 4, job_extra: ["--constraint=256G"]}
adapt: {minimum: 0, maximum: 20}
""")
    jobs = SiteJobs(cfg, hub="tls://hub:8786", config_file=str(config), session="abcdef12",
                    security=sec, relay={"federation.relay.address": "hub:8789",
                                         "federation.relay.token": "s3cret"},
                    worker_env={"FEDERATION_RELAY_TOKEN": "s3cret",
                                "FEDERATION_CAPABILITY_KEY": "k3y"})
    script = jobs.job_script()
    command = script.strip().splitlines()[-1]
    assert f"-m federation.cli site-worker {config}" in command
    assert "--nworkers 4" in command and "--nthreads 4" in command
    assert f"--tls-cert {cert}" in command and "--relay hub:8789" in command
    assert "s3cret" not in command and "export FEDERATION_RELAY_TOKEN=s3cret" in script
    assert "k3y" not in command and "export FEDERATION_CAPABILITY_KEY=k3y" in script
    for directive in ("-p compute", "-A ab0123", "--cpus-per-task=16", "--constraint=256G",
                      "-J fed-awi"):
        assert f"#SBATCH {directive}" in script


# -- the hub: demand and retiring within a site ------------------------------------------


def _site_workers():
    """Workers named 0 and 1 at site a, 2 at site b."""
    return [("127.0.0.1", 1, {"resources": worker_resources(site, [])}) for site in "aab"]


@gen_cluster(client=True, nthreads=_site_workers())
async def test_retiring_moves_data_within_the_site_only(c, s, a0, a1, b0):
    state = install(s)
    scaling = s.plugins["federation-scaling"]
    held = c.submit(lambda: 42, key="held-at-a0", workers=[a0.address])
    at_b = c.submit(lambda: 7, key="held-at-b0", workers=[b0.address])
    await c.gather([held, at_b])

    demand = scaling.demand(None, "a")
    assert demand["held"] == 1 and set(demand["workers"]) == {"0", "1"}

    assert await scaling.retire(None, "a", ["0"]) == ["0"]
    assert a0.address not in s.workers
    assert {ws.address for ws in s.tasks["held-at-a0"].who_has} == {a1.address}  # not b0
    assert await held == 42

    # the last worker of a site keeps its data rather than hand it to another site
    assert await scaling.retire(None, "b", ["2"]) == []
    assert b0.address in s.workers
    await asyncio.sleep(0.2)  # the worker hears it is running again
    assert s.workers[b0.address].status.name == "running"
    assert {ws.address for ws in s.tasks["held-at-b0"].who_has} == {b0.address}
    assert state.sites_info()["b"]["jobs"] is None


@gen_cluster(client=True, nthreads=[])
async def test_tasks_waiting_for_queued_jobs_are_not_an_outage(c, s):
    """A site with no workers but jobs pending in its batch queue is coming, not down:
    its tasks wait past the outage timeout; once nothing is pending, they fail."""
    state = install(s)
    outage = s.plugins["federation-outage"]
    outage.timeout = 0.2
    state.register("x", "session", "tcp://site", [])
    jobs = {"type": "slurm", "requested": 1, "pending": 1, "running": 0, "halted": False}
    state.heartbeat("x", "session", jobs)
    future = c.submit(sum, [1, 2], resources={"site:x": 1}, key="waits-for-x")
    await asyncio.sleep(0.1)
    for _ in range(3):
        outage.check()
        await asyncio.sleep(0.15)
    assert s.tasks["waits-for-x"].state == "no-worker"

    state.heartbeat("x", "session", {**jobs, "pending": 0, "requested": 0})
    for _ in range(3):
        outage.check()
        await asyncio.sleep(0.15)
    with pytest.raises(Exception, match="site 'x' has been unavailable"):
        await future


# -- real processes: a hub, a local site, SLURM jobs, operator pods ---------------------


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    try:
        with OneNodeSlurm(tmp_path_factory.mktemp("slurm")) as cluster:
            previous = os.environ.get("SLURM_CONF")
            os.environ["SLURM_CONF"] = str(cluster.conf)  # sites and squeue use it
            yield cluster
            if previous is None:
                del os.environ["SLURM_CONF"]
            else:
                os.environ["SLURM_CONF"] = previous
    except SlurmUnavailable as e:
        pytest.skip(f"no one-node SLURM here: {e}")


@pytest.fixture(scope="module")
def hpc_federation(tmp_path_factory):
    """A hub with a local site ``geomar`` (1 worker) for the batch sites to join."""
    root = tmp_path_factory.mktemp("hpc")
    geomar = make_site(root, "geomar", "chl", "chl.zarr")
    with LocalFederation(root / "logs") as lf:
        lf.start_site(geomar)
        lf.root = root
        yield lf


def _reference(path: Path) -> xr.DataArray:
    """Plain xarray on the file, in this process (not on the federation's workers)."""
    with dask.config.set(scheduler="sync"):
        return xr.open_zarr(path, consolidated=False).sst.mean(["lat", "lon"]).compute()


def test_adaptive_slurm_site_follows_demand(hpc_federation, slurm):
    """adapt 0..2: no jobs while idle; a computation brings jobs (in squeue), the result
    equals plain xarray, and the jobs end when the site is idle again."""
    lf = hpc_federation
    config = make_site(lf.root, "awi", "sst", "sst.zarr", nthreads=1, cluster=SLURM_SITE,
                       adapt={"minimum": 0, "maximum": 2})
    lf.start_site(config)
    with lf.connect() as fed:
        # a heartbeat: the site reports its (zero) jobs
        awi = wait(lambda: (a := fed.sites()["awi"])["jobs"] and a, 30, "awi's job report")
        assert awi["workers"] == [] and slurm.jobs("fed-awi") == []
        assert awi["jobs"]["requested"] == 0 and awi["jobs"]["adaptive"]

        future = fed.client.compute(fed.open_dataset("awi/sst").sst.mean(["lat", "lon"]))
        jobs = wait(lambda: slurm.jobs("fed-awi"), 30, "jobs in squeue")
        assert 1 <= len(jobs) <= 2
        result = future.result(timeout=120)
        xr.testing.assert_allclose(result, _reference(lf.root / "awi" / "sst.zarr"))
        assert fed.sites()["awi"]["tasks_done"] >= 8  # one read per chunk, at awi
        status = wait(lambda: fed.sites()["awi"]["jobs"], 10, "job status")
        assert status["requested"] >= 1 and status["failed"] == 0
        # the same in the HTTP API and the dashboard's sites table
        url = f"http://127.0.0.1:{lf.dashboard_port}/federation/api/v1/sites"
        with urllib.request.urlopen(url, timeout=30) as r:
            (api,) = [s for s in json.load(r)["sites"] if s["name"] == "awi"]
        assert api["jobs"]["type"] == "slurm" and api["jobs"]["maximum"] == 2
        assert batch_jobs(status).startswith(f"slurm: {status['running']} running, ")

        del future, result
        wait(lambda: not slurm.jobs("fed-awi"), 60, "the jobs to end")
        wait(lambda: fed.sites()["awi"]["workers"] == [], 30, "the workers to leave")
        assert wait(lambda: (j := fed.sites()["awi"]["jobs"]) and j["requested"] == 0
                        and j, 10, "requested 0")["running"] == 0
    lf.stop("awi")


def test_fixed_slurm_site_survives_a_cancelled_job(hpc_federation, slurm):
    """workers: 2 in one job of 2 processes; scancel of the job mid-computation: the lost
    tasks rerun on the site's replacement job, never at geomar, and the result is right."""
    lf = hpc_federation
    config = make_site(lf.root, "dkrz", "sst", "sst.zarr", nthreads=1, workers=2,
                       cluster={**SLURM_SITE, "cores": 2, "memory": "2GiB", "processes": 2})
    lf.start_site(config)
    with lf.connect() as fed:
        workers = wait(lambda: len(w := fed.sites()["dkrz"]["workers"]) == 2 and w, 60,
                           "two workers")
        (job, state), = slurm.jobs("fed-dkrz")
        assert state == "RUNNING" and all(w.rsplit("-", 1)[1] in "01" for w in workers)
        geomar_before = fed.sites()["geomar"]["tasks_done"]

        def slow(block):
            import time

            time.sleep(0.4)
            return block

        sst = fed.open_dataset("dkrz/sst").sst
        future = fed.client.compute(sst.map_blocks(slow).mean(["lat", "lon"]))
        wait(lambda: fed.sites()["dkrz"]["tasks_done"] >= 2, 30, "tasks at dkrz")
        subprocess.run(["scancel", job], env=slurm.env, check=True)
        result = future.result(timeout=120)
        xr.testing.assert_allclose(result, _reference(lf.root / "dkrz" / "sst.zarr"))
        assert fed.sites()["geomar"]["tasks_done"] == geomar_before
        (new_job, _), = wait(lambda: slurm.jobs("fed-dkrz"), 30, "a replacement job")
        assert new_job != job
        status = wait(lambda: (j := fed.sites()["dkrz"]["jobs"]) and j["ended"] and j,
                          10, "the ended job reported")
        assert status["ended"] == 1 and status["failed"] == 0
    lf.stop("dkrz")
    wait(lambda: not slurm.jobs("fed-dkrz"), 30, "jobs cancelled with the site")


def test_rejected_and_failing_jobs_are_reported(hpc_federation, slurm):
    """A partition SLURM does not have stops the site naming cluster.queue; a job that
    cannot start its workers is reported and, after three in a row, not submitted again."""
    lf = hpc_federation
    bad = make_site(lf.root, "badq", "sst", "sst.zarr", cluster={**SLURM_SITE, "queue": "nope"})
    proc = lf.start_site(bad, wait=False)
    assert proc.wait(60) == 2
    assert "cluster.queue: SLURM refuses the site's jobs" in lf.log("badq")
    assert "Traceback" not in lf.log("badq")

    broken = make_site(lf.root, "broken", "sst", "sst.zarr",
                       cluster={**SLURM_SITE, "python": "/nonexistent/python"})
    lf.start_site(broken)
    with lf.connect() as fed:
        status = wait(lambda: (j := fed.sites()["broken"]["jobs"]) and j["halted"] and j,
                          60, "the site to stop submitting")
        assert status["failed"] == 3 and "before its workers joined" in status["error"]
        assert "/nonexistent/python" in status["error"]  # the job's own error output
        time.sleep(3)  # a negative check: nothing more happens in a while
        assert fed.sites()["broken"]["jobs"]["failed"] == 3  # not retried forever
    lf.stop("broken")


def test_kubernetes_site_answers_the_operator(hpc_federation, tmp_path, monkeypatch):
    """What the dask-kubernetes operator asks a kubernetes site (the DaskCluster's
    scheduler pod): the pods its demand needs, and to retire pods through the hub. The
    operator's worker pods are played by 'dask federation site-worker' processes, which
    get the site's registration secrets from the site process with the bootstrap token
    (a pod with another token gets nothing it can use)."""
    import sys

    from federation.local import free_port

    lf = hpc_federation
    port = free_port()
    token = "b" * 43  # the Secret both pods mount; the site process inherits it
    monkeypatch.setenv("FEDERATION_SITE_BOOTSTRAP_TOKEN", token)
    secrets_url = f"http://127.0.0.1:{port}/federation/v1/worker-secrets"

    def pod(name: str, *extra: str) -> list[str]:
        return [sys.executable, "-m", "federation.cli", "site-worker", str(config),
                lf.address, "--name", name, "--nthreads", "1", "--memory-limit", "1GiB",
                "--secrets-from", secrets_url, *extra]

    config = make_site(lf.root, "kube", "sst", "sst.zarr", nthreads=1, adapt={
        "minimum": 0, "maximum": 2}, cluster={"type": "kubernetes", "image": "x", "cores": 1,
                                              "memory": "1GiB"})
    lf.start_site(config, "--operator-api", str(port))
    api = f"http://127.0.0.1:{port}/api/v1"

    def target() -> int:
        with urllib.request.urlopen(f"{api}/adaptive_target", timeout=10) as r:
            return json.load(r)["workers"]

    assert target() == 0  # idle: no pods
    with urllib.request.urlopen(secrets_url, timeout=10) as r:
        sealed = r.read()  # what anyone on the pod network can fetch: sealed
    assert b"FEDERATION_CAPABILITY_KEY" not in sealed
    # another token opens no answer, now or later: the pod ends at once, not after
    # waiting its death timeout (120 s, beyond this call's timeout) for the site
    impostor = subprocess.run(
        pod("impostor", "--death-timeout", "120"), capture_output=True, text=True,
        timeout=60, env={**os.environ, "FEDERATION_SITE_BOOTSTRAP_TOKEN": "i" * 43},
    )
    assert impostor.returncode == 2 and "do not open" in impostor.stderr
    with lf.connect() as fed:
        future = fed.client.compute(fed.open_dataset("kube/sst").sst.mean(["lat", "lon"]))
        assert wait(lambda: target() == 2, 30, "demand for two pods")
        worker = subprocess.Popen(pod("fed-kube-default-worker-1a2b"),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # a pod whose worker cannot start ends: fail then, not after the timeout
            wait(lambda f=future: f.done() or worker.poll() is not None, 120, "the result")
            assert future.done(), f"the pod's site-worker exited ({worker.returncode})"
            result = future.result(timeout=120)
            xr.testing.assert_allclose(result, _reference(lf.root / "kube" / "sst.zarr"))
            assert fed.sites()["kube"]["workers"] == ["fed-kube-default-worker-1a2b"]
            del future, result
            assert wait(lambda: target() == 0, 30, "no demand when idle")
            request = urllib.request.Request(f"{api}/retire_workers", method="POST",
                                             data=json.dumps({"n": 1}).encode())
            with urllib.request.urlopen(request, timeout=30) as r:
                retired = json.load(r)
            assert retired == {"fed-kube-default-worker-1a2b":
                               {"name": "fed-kube-default-worker-1a2b"}}
            wait(lambda: fed.sites()["kube"]["workers"] == [], 30, "the pod's worker gone")
            assert worker.wait(30) is not None  # the process ends with its worker
            status = wait(lambda: fed.sites()["kube"]["jobs"], 10, "reported workers")
            assert status["type"] == "kubernetes" and status["maximum"] == 2
        finally:
            if worker.poll() is None:
                worker.kill()
    lf.stop("kube")


def test_tls_strict_outbound_only_slurm_site(slurm, tmp_path):
    """Job workers carry the site's certificate, strict mode and relay: a mutual-TLS hub
    accepts them as awi's, they listen on relay:// (nothing inbound), compute, and refuse
    code sent by value."""
    from federation import StrictRefusal
    from federation.security import init_ca, issue, security

    pki = tmp_path / "pki"
    init_ca(pki)
    for role, name in (("hub", "hub"), ("site", "awi"), ("user", "alice")):
        issue(pki, role, name)

    def creds(name: str) -> tuple[str, str, str]:
        return str(pki / "ca.pem"), str(pki / f"{name}.pem"), str(pki / f"{name}-key.pem")

    ca, cert, key = creds("site-awi")
    config = make_site(tmp_path, "awi", "sst", "sst.zarr", nthreads=1, strict=True,
                       connectivity="outbound-only", tls={"ca_file": ca, "cert": cert,
                                                          "key": key}, cluster=SLURM_SITE)
    with LocalFederation(tmp_path / "logs", dashboard=False, tls=creds("hub-hub")) as lf:
        lf.start_site(config)
        with lf.connect(security=security(*creds("user-alice"))) as fed:
            (worker,) = wait(lambda: fed.sites()["awi"]["workers"], 180, "the job's worker")
            info = fed.client.scheduler_info(n_workers=-1)["workers"]
            assert [a for a, w in info.items() if w["name"] == worker][0].startswith("relay://")
            sst = fed.open_dataset("awi/sst").sst
            result = sst.mean(["lat", "lon"]).compute()
            xr.testing.assert_allclose(result, _reference(tmp_path / "awi" / "sst.zarr"))
            assert fed.sites()["awi"]["relayed_bytes"] > 0
            mapped = sst.data.map_blocks(lambda block: block + 1, meta=np.array((), "f4"))
            with pytest.raises(StrictRefusal, match="strict site 'awi' refuses"):
                fed.client.compute(mapped.sum()).result(timeout=120)
            assert fed.sites()["awi"]["workers"] == [worker]  # refused, still serving
