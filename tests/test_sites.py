"""Sites joining, leaving, misbehaving; placement under load; the CLI."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner
from distributed import get_task_stream

from federation.cli import main as cli_main
from federation.sources import UNLOCKED_HDF5

from .conftest import make_site, open_local, worker_sites


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "federation.cli", *args],
        capture_output=True, text=True, timeout=timeout,
    )


def _slow(x):
    time.sleep(0.2)
    return x


BAD_CONFIGS = [
    ("bad-yaml", "site: awi\ndatasets: [unclosed\n", "not valid YAML"),
    ("unknown-key", "site: awi\nworkerz: 2\ndatasets: {}\n", "unknown key 'workerz'"),
    ("unknown-dataset-key", "site: awi\ndatasets:\n  sst: {path: x.zarr, pth: y}\n",
     "unknown key 'datasets.sst.pth'"),
    ("wrong-type", "site: awi\nworkers: two\ndatasets: {}\n", "workers: Input should be"),
    ("missing-site", "datasets: {}\n", "missing required key 'site'"),
    ("missing-path", "site: awi\ndatasets:\n  sst: {path: nowhere.zarr}\n",
     "datasets.sst.path: .*nowhere.zarr' does not exist"),
    ("duplicate-dataset", "site: awi\ndatasets:\n  sst: {path: a}\n  sst: {path: b}\n",
     "duplicate key 'sst' on line 4"),
    ("bad-name", "site: a/b\ndatasets: {}\n", "site name 'a/b' is not allowed"),
    ("corrupt-zarr", "site: awi\ndatasets:\n  sst: {path: corrupt.zarr}\n",
     "datasets.sst: cannot open .* with the zarr engine"),
    ("not-netcdf", "site: awi\ndatasets:\n  sst: {path: notes.txt}\n",
     "datasets.sst: cannot open .*notes.txt.*Set 'engine:' to an installed one"),
]


#: refused while the config file is read, before anything starts: these run the ``site``
#: command in the test's process (click's runner: the CLI's own code, without a Python
#: start-up each); the others (a site that starts, then finds its data unreadable) and
#: the first run as real processes
IN_PROCESS = {"unknown-key", "unknown-dataset-key", "wrong-type", "missing-site",
              "missing-path", "duplicate-dataset", "bad-name"}


@pytest.mark.parametrize("case,text,message", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_site_config_stops_with_a_message(
    tmp_path, local_federation, monkeypatch, case, text, message
):
    """Each mistake ends ``dask federation site`` with exit status 2 and one line naming
    it, no traceback."""
    import re

    (tmp_path / "corrupt.zarr").mkdir()
    (tmp_path / "corrupt.zarr" / "zarr.json").write_text("{not json")
    (tmp_path / "notes.txt").write_text("just text")
    cfg = tmp_path / f"{case}.yaml"
    cfg.write_text(text)
    args = ("site", str(cfg), "--hub", local_federation.address)
    if case not in IN_PROCESS:
        proc = _cli(*args)
        code, stderr = proc.returncode, proc.stderr
    else:
        for name in UNLOCKED_HDF5:  # set by the site command for its process: not ours
            monkeypatch.delenv(name, raising=False)
        result = CliRunner().invoke(cli_main, args)
        assert isinstance(result.exception, SystemExit), result.exc_info
        code, stderr = result.exit_code, result.stderr
    assert code == 2, stderr
    assert "error:" in stderr
    assert re.search(message, stderr), stderr
    assert "Traceback" not in stderr


def test_site_name_taken_is_refused_and_hub_keeps_serving(tmp_path, local_federation, fed):
    cfg = make_site(tmp_path, "awi", "t2m", "other.nc", size=5 * 180 * 360 * 4)
    proc = _cli("site", str(cfg), "--hub", local_federation.address)
    assert proc.returncode == 2
    assert "site name 'awi' is already registered" in proc.stderr
    assert "--join" in proc.stderr
    assert fed.catalog().set_index("dataset").loc["awi/sst", "site"] == "awi"
    assert float(fed.open_dataset("awi/sst").sst[0, 0, 0].compute()) is not None


def test_unreachable_hub_is_a_clear_error(tmp_path):
    cfg = make_site(tmp_path, "lonely", "sst", "sst.zarr", size=5 * 180 * 360 * 4)
    proc = _cli("site", str(cfg), "--hub", "tcp://127.0.0.1:1", "--timeout", "2")
    assert proc.returncode == 2
    assert "cannot reach the hub at tcp://127.0.0.1:1" in proc.stderr


@pytest.mark.xfail(
    reason="since the catalog ships encoded metadata, a --join process sometimes computes "
    "another catalog version than the running site for the same files ('datasets differ'); "
    "not yet understood (versions agree when computed in two plain processes)",
    strict=False,
)
def test_worker_joining_a_site_later_is_used(tmp_path, local_federation, fed):
    cfg = make_site(tmp_path, "polar", "sst", "ice.zarr", nthreads=1, chunk_days=2)
    local_federation.start_site(cfg)
    before = {a for a, s in worker_sites(fed).items() if s == "polar"}
    local_federation.start_site(cfg, "--join", name="polar-join")
    after = {a for a, s in worker_sites(fed).items() if s == "polar"}
    assert len(before) == 1 and len(after) == 2
    assert fed.sites()["polar"]["nthreads"] == 2

    sst = fed.open_dataset("polar/sst").sst
    with get_task_stream(client=fed.client) as stream:
        result = sst.map_blocks(_slow).mean(["lat", "lon"]).compute()
    ran_on = {e["worker"] for e in stream.data}
    assert ran_on == after  # the new worker did its share, nothing ran elsewhere
    local = open_local(tmp_path / "polar" / "ice.zarr")
    xr.testing.assert_allclose(result, local.sst.mean(["lat", "lon"]))
    local_federation.stop("polar-join")
    local_federation.stop("polar")


def test_stealing_never_moves_work_to_an_idle_site(tmp_path, local_federation, fed):
    """One busy single-thread site, three idle sites: nothing leaves the busy one."""
    cfg = make_site(tmp_path, "busy", "chl", "chl.zarr", nthreads=1, chunk_days=2)
    local_federation.start_site(cfg)
    chl = fed.open_dataset("busy/chl").chl

    def steal_moves(dask_scheduler):
        """(victim, thief) of every steal the scheduler carried out."""
        return [
            (msg[3], msg[4]) for _, msg in dask_scheduler.get_events("stealing")
            if msg[0] == "confirm"
        ]

    assert "stealing" in fed.client.run_on_scheduler(lambda dask_scheduler: list(
        dask_scheduler.extensions))
    earlier = len(fed.client.run_on_scheduler(steal_moves))
    with get_task_stream(client=fed.client) as stream:
        result = chl.map_blocks(_slow).sum(["lat", "lon"]).compute()
    sites = worker_sites(fed)
    assert {sites[e["worker"]] for e in stream.data} == {"busy"}
    assert len(stream.data) >= 40  # 20 slow tasks: plenty of time for stealing to try
    for victim, thief in fed.client.run_on_scheduler(steal_moves)[earlier:]:
        assert sites[victim] == sites[thief]  # steals during this run: both alive
    local = open_local(tmp_path / "busy" / "chl.zarr")
    np.testing.assert_allclose(result, local.chl.sum(["lat", "lon"]), rtol=1e-5)
    local_federation.stop("busy")


def test_cli_help_for_every_command():
    for args in ([], ["hub"], ["site"], ["catalog"], ["demo"]):  # in-process: no imports
        result = CliRunner().invoke(cli_main, [*args, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output
    dask = subprocess.run(
        [sys.executable, "-m", "dask", "federation", "--help"], capture_output=True, text=True
    )
    assert dask.returncode == 0 and "demo" in dask.stdout


def test_cli_catalog(local_federation):
    proc = _cli("catalog", local_federation.address)
    assert proc.returncode == 0, proc.stderr
    assert "awi/sst" in proc.stdout and "geomar/chl" in proc.stdout
