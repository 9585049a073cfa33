"""Site outages, replicas, worker crashes: degrade visibly, recover, never a wrong answer."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from distributed import get_task_stream

from federation.local import LocalFederation

from .conftest import make_site, open_local, worker_sites
from .wait import wait


def _slow(x):
    time.sleep(0.3)
    return x


@pytest.fixture
def outage_federation(tmp_path, monkeypatch):
    """A hub with a 4 s site-outage timeout and no dashboard. (How the outage timeout
    fails waiting reads: tests/unit/test_routing.py.)"""
    monkeypatch.setenv("DASK_FEDERATION__SITE_OUTAGE_TIMEOUT", "4s")
    lf = LocalFederation(tmp_path / "logs", dashboard=False)
    lf.start_hub()
    try:
        yield lf
    finally:
        lf.close()


def test_replica_serves_while_the_original_site_is_down(tmp_path, outage_federation):
    lf = outage_federation
    geo = make_site(tmp_path, "geo", "chl", "chl.zarr")
    lf.start_site(geo)
    # an identical copy at another site
    (tmp_path / "mirror").mkdir()
    shutil.copytree(tmp_path / "geo" / "chl.zarr", tmp_path / "mirror" / "copy.zarr")
    (tmp_path / "mirror" / "mirror.yaml").write_text(
        "site: mirror\nworkers: 1\nnthreads: 2\n"
        "datasets:\n  chl: {path: copy.zarr, replica_of: geo/chl}\n"
    )
    lf.start_site(tmp_path / "mirror" / "mirror.yaml")

    # a "replica" with other data is refused at registration
    fake = make_site(tmp_path, "fake", "sst", "sst.zarr")
    fake.write_text(
        fake.read_text().replace("path: sst.zarr", "path: sst.zarr\n    replica_of: geo/chl")
    )
    proc = subprocess.run(
        [sys.executable, "-m", "federation.cli", "site", str(fake), "--hub", lf.address],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "'fake/sst' is not a replica of 'geo/chl': variables differ" in proc.stderr

    expected = float(open_local(tmp_path / "geo" / "chl.zarr").chl.mean())
    with lf.connect() as fed:
        chl = fed.open_dataset("geo/chl").chl.mean()
        lf.stop("geo")
        wait(lambda: "geo" not in set(worker_sites(fed).values()), 30, "geo's workers gone")
        assert fed.sites()["geo"]["status"] in ("offline", "no workers")
        with get_task_stream(client=fed.client) as stream:
            value = float(chl.compute())
        np.testing.assert_allclose(value, expected, rtol=1e-5)
        sites = worker_sites(fed)
        assert {sites[e["worker"]] for e in stream.data} == {"mirror"}


def test_worker_crash_is_retried_inside_the_site(fed, data_root):
    """Kill one of awi's two workers mid-computation: its tasks rerun at awi only."""
    sites = worker_sites(fed)
    awi = sorted(a for a, s in sites.items() if s == "awi")
    victim_pid = fed.client.run(os.getpid, workers=[awi[0]])[awi[0]]
    sst = fed.open_dataset("awi/sst", chunks={"time": 2}).sst
    future = fed.client.compute(sst.map_blocks(_slow).mean(["lat", "lon"]))

    def kill_soon():
        time.sleep(1.5)
        os.kill(victim_pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_soon)
    with get_task_stream(client=fed.client) as stream:
        killer.start()
        result = future.result(timeout=120)
        killer.join()
    local = open_local(data_root / "awi" / "sst.zarr").sst
    np.testing.assert_allclose(result, local.mean(["lat", "lon"]), rtol=1e-5)
    after = worker_sites(fed)
    assert awi[0] not in after  # really killed (the nanny started a new process)
    assert {after.get(e["worker"], sites.get(e["worker"])) for e in stream.data} == {"awi"}
    wait(lambda: len(fed.sites()["awi"]["workers"]) >= 2, 30, "awi's second worker back")
    assert len(fed.sites()["awi"]["workers"]) == 2


@pytest.mark.slow  # a minute: the hub waits 30 s for the silent workers' nanny
def test_partitioned_site_recovers_and_the_computation_finishes(tmp_path, monkeypatch):
    """Pause a whole site (its processes stop answering, like a cut network) for longer
    than the hub's worker TTL: its tasks wait, then finish once it is back."""
    monkeypatch.setenv("DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL", "4s")
    lf = LocalFederation(tmp_path / "logs", dashboard=False)
    lf.start_hub()
    try:
        cfg = make_site(tmp_path, "cut", "sst", "sst.zarr", chunk_days=2)
        proc = lf.start_site(cfg)
        with lf.connect() as fed:
            future = fed.client.compute(
                fed.open_dataset("cut/sst").sst.map_blocks(_slow).mean(["lat", "lon"])
            )
            time.sleep(1.0)
            os.killpg(proc.pid, signal.SIGSTOP)
            # the hub first tries to restart silent workers through their nanny (30 s)
            wait(lambda: "cut" not in set(worker_sites(fed).values()), 90,
                 "the hub to notice the cut site", interval=0.3)
            assert "cut" not in set(worker_sites(fed).values())  # the hub noticed
            assert future.status == "pending"  # and nothing ran elsewhere
            os.killpg(proc.pid, signal.SIGCONT)
            result = future.result(timeout=120)
            local = open_local(tmp_path / "cut" / "sst.zarr").sst
            np.testing.assert_allclose(result, local.mean(["lat", "lon"]), rtol=1e-5)
    finally:
        lf.close()


def test_hub_restart_gives_clients_a_clear_error_then_they_reconnect(tmp_path):
    from distributed.client import FutureCancelledError

    lf = LocalFederation(tmp_path / "logs", dashboard=False)
    lf.start_hub()
    try:
        lf.start_site(make_site(tmp_path, "awi", "sst", "sst.zarr", chunk_days=2))
        with lf.connect() as fed:
            sst = fed.open_dataset("awi/sst").sst
            future = fed.client.compute(sst.map_blocks(_slow).mean())
            time.sleep(1.0)
            lf.stop("hub")
            lf.start_hub()
            started = time.monotonic()
            with pytest.raises(FutureCancelledError, match="scheduler-connection-lost"):
                future.result(timeout=60)
            assert time.monotonic() - started < 30  # an error, not a hang
            wait(lambda: "awi/sst" in set(fed.catalog()["dataset"]), 60,
                 "the site to re-announce")
            # the same client works again once the site is back
            local = open_local(tmp_path / "awi" / "sst.zarr").sst
            np.testing.assert_allclose(float(sst.mean().compute()), float(local.mean()), rtol=1e-5)
    finally:
        lf.close()
