"""What a new user trips over: restarts, shutdown, reprs, error wording (issue 18)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import psutil
import pytest
import xarray as xr
from distributed import Scheduler
from distributed.utils_test import gen_test

import federation
from federation import (
    HubUnavailable,
    MethodError,
    RawDataMoveWarning,
    ResultError,
    SiteOfflineError,
    UnknownDatasetError,
    UnknownMethodError,
    connect,
)
from federation.local import LocalFederation
from federation.security import init_ca, issue, security
from federation.serve import hub_addresses

from .conftest import make_site, open_local
from .wait import wait

SMALL = 10 * 180 * 360 * 4  # 10 days of a 1° grid: ~2.6 MB per site


def _wait_connected(fed, site: str, timeout: float = 60) -> None:
    wait(lambda: fed.sites().get(site, {}).get("status") == "connected", timeout,
         f"site {site} connected")


def _offline_soon(fed, name: str, timeout: float = 10) -> None:
    """Open ``name`` until the hub has noticed its site went away (it raises then)."""
    wait(lambda: fed.open_dataset(name) is None, timeout, f"opening {name} to fail",
         interval=0.1)


def test_site_killed_and_restarted_replaces_its_dead_registration(tmp_path):
    """kill -9 a site while a cross-site computation waits for it; start it again a few
    seconds later (well within the heartbeat expiry): it is not refused its own name, its
    workers join and the computation finishes with the right answer (awi's worker fetches
    from geomar's new worker at once: it asks the hub for members again before refusing)."""
    awi = make_site(tmp_path, "awi", "sst", "sst.zarr", size=SMALL, chunk_days=1)
    geomar = make_site(tmp_path, "geomar", "chl", "chl.zarr", size=SMALL, chunk_days=1)
    sst = open_local(tmp_path / "awi" / "sst.zarr").sst.mean(["lat", "lon"])
    chl = open_local(tmp_path / "geomar" / "chl.zarr").chl.mean(["lat", "lon"])
    expected = float(xr.corr(sst, chl, dim="time"))
    with LocalFederation(tmp_path / "logs", dashboard=False) as lf:
        procs = {"awi": lf.start_site(awi, wait=False), "geomar": lf.start_site(geomar, wait=False)}
        for name, p in procs.items():
            lf.wait_for_site(name, p)
        proc = procs["geomar"]
        with lf.connect() as fed:
            s = fed.open_dataset("awi/sst").sst.mean(["lat", "lon"])
            c = fed.open_dataset("geomar/chl").chl.mean(["lat", "lon"])
            proc.kill()  # SIGKILL: no unregister, no goodbye
            proc.wait()
            future = fed.client.compute(xr.corr(s, c, dim="time"))
            with pytest.raises(SiteOfflineError, match="site 'geomar', which is offline.*"
                               r"federation.site-outage-timeout \(300 s\)"):
                _offline_soon(fed, "geomar/chl")
            time.sleep(3)  # a negative check: still waiting after a while
            assert not future.done()  # it waits for geomar
            restarted = lf.start_site(geomar, name="geomar-again", wait=False)
            _wait_connected(fed, "geomar")
            assert restarted.poll() is None, lf.log("geomar-again")
            np.testing.assert_allclose(float(future.result(timeout=60)), expected, rtol=1e-5)
        assert "SiteNameTaken" not in lf.log("hub")
        assert "a site process disconnected" in lf.log("hub")


@pytest.mark.slow
def test_demo_keep_stops_on_sigterm_leaving_no_process_and_no_data():
    """``dask federation demo --keep`` runs end to end, and stopped by SIGTERM (timeout,
    docker stop, systemd) cleans up like Ctrl-C: no hub or site process survives, the
    temporary data is gone. On the way it shows progress, the result, the tasks per site,
    the bytes that crossed borders and the shared workflow's answer, and links the
    federation page while the hub runs."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "federation.cli", "demo", "--size", "20MB", "--keep"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C (or SIGTERM) stops it" in line:
                break
        out = "".join(lines)
        assert "Ctrl-C (or SIGTERM)" in out, out
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 4  # the hub and three sites (and their workers)
        workdir = Path(re.search(r"per site\) in (\S+)", out).group(1))
        assert workdir.exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [p.cmdline() for p in alive]
    assert not workdir.exists()
    # progress while it starts, in order, and the federation page while the hub is up
    steps = [re.search(r"\] (.*)", line).group(1) for line in lines if line.startswith("[")]
    assert steps[0].startswith("hub up at tcp://127.0.0.1:")
    assert re.search(r"federation page http://127\.0\.0\.1:\d+/federation$", steps[0])
    assert [s for s in steps if s.endswith("site up")] == [
        "awi: site up", "geomar: site up", "dkrz: site up"
    ]
    assert "Demo took" in out and "/status" not in out
    for text in ("corr(sst, chl)", "Tasks run per site: awi:", "Bytes across site borders",
                 "a download-everything approach moves", "monthly anomaly corr(sst, chl)"):
        assert text in out, out
    assert float(out.split("corr(sst, chl)")[1].split()[0]) < -0.5


def _log_after(lf, name: str, start: int, expect: str, timeout: float = 10) -> str:
    """The part of a process's log written after offset ``start``, once ``expect`` is in it."""
    with contextlib.suppress(TimeoutError):  # callers assert on the text, naming what is missing
        wait(lambda: expect in lf.log(name)[start:], timeout, f"{expect!r} in {name}'s log")
    return lf.log(name)[start:]


def test_user_mistakes_are_answered_not_logged_as_errors(local_federation, fed):
    """A typo in a method or dataset name, a duplicate result name, a method that raises:
    the user gets the error; the hub and site log one INFO line, no ERROR traceback."""
    lf = local_federation
    hub_start, awi_start = len(lf.log("hub")), len(lf.log("awi"))
    with pytest.raises(UnknownMethodError, match="Did you mean 'awi/scale'"):
        fed.method("awi/scal")
    with pytest.raises(UnknownDatasetError, match="Did you mean 'awi/sst'"):
        fed.open_dataset("awi/sstt")
    name = f"dup_{uuid.uuid4().hex[:8]}"
    field = fed.open_dataset("awi/sst").sst.isel(time=0)
    fed.publish_result(name, field, site="awi")
    with pytest.raises(ResultError, match="already exists; pass overwrite=True"):
        fed.publish_result(name, field, site="awi")
    with pytest.raises(MethodError, match="boom"):
        fed.call("awi/fail", "boom").result()
    hub = _log_after(lf, "hub", hub_start, "Refused federation_dataset")
    assert "Refused federation_method: UnknownMethodError: unknown method 'awi/scal'" in hub
    assert "ERROR" not in hub and "Traceback" not in hub, hub
    awi = _log_after(lf, "awi", awi_start, "MethodError")
    assert re.search(r"INFO - Task .* failed: ResultError\(.*already exists", awi), awi
    assert "ERROR" not in awi and "Compute Failed" not in awi, awi


def test_overlong_names_get_a_short_clear_error(fed):
    with pytest.raises(UnknownDatasetError, match="dataset name of 100,000 characters"):
        fed.open_dataset("a" * 100_000)
    with pytest.raises(UnknownMethodError, match="method name of 100,000 characters"):
        fed.method("awi/" + "a" * 99_996)


@pytest.fixture(scope="module")
def tls_hub(tmp_path_factory):
    """A TLS hub without sites, and the federation's CA directory."""
    root = tmp_path_factory.mktemp("tls")
    init_ca(root / "ca")
    cert, key = issue(root / "ca", "hub", "hub")
    with LocalFederation(root / "logs", dashboard=False,
                         tls=(root / "ca" / "ca.pem", cert, key)) as lf:
        lf.ca = root / "ca"
        yield lf


def test_tls_mistakes_name_the_fix(tls_hub):
    ca = tls_hub.ca
    with pytest.raises(ValueError, match=r"uses TLS; pass security=federation.security.secur"):
        connect(tls_hub.address)
    plain = tls_hub.address.replace("tls://", "tcp://")
    with pytest.raises(HubUnavailable, match=rf"speaks TLS, not plain TCP.*connect to "
                       rf"{re.escape(tls_hub.address)} and pass security="):
        connect(plain, timeout="10s")
    cert, key = issue(ca, "user", "carol")
    with connect(tls_hub.address, security=security(ca / "ca.pem", cert, key)) as fed:
        assert fed.sites() == {}  # the right way works


def test_site_with_another_sites_certificate_fails_at_once(tls_hub, tmp_path):
    ca = tls_hub.ca
    cert, key = issue(ca, "site", "awi")
    cfg = make_site(tmp_path, "geomar", "chl", "chl.zarr", size=SMALL)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "federation.cli", "site", str(cfg), "--hub", tls_hub.address,
         "--tls-ca-file", str(ca / "ca.pem"), "--tls-cert", str(cert), "--tls-key", str(key)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "the certificate of site 'awi' cannot register site 'geomar'" in proc.stderr
    assert "cannot reach the hub" not in proc.stderr
    assert time.monotonic() - started < 25  # no 30 s of retries


def test_reprs_are_readable_and_render_in_jupyter(fed):
    text = repr(fed)
    # other modules may have added sites to the session federation (e.g. test_memory's)
    for site in ("awi", "dkrz", "geomar"):
        assert re.search(rf"\b{site} \(connected\)", text), text
    assert re.search(r"page http://127\.0\.0\.1:\d+/federation>$", text), text
    page = fed._repr_html_()
    assert "<h3" in page and "Federation" in page and 'color: #2ca02c;">connected' in page
    assert re.search(r'<a href="http://127\.0\.0\.1:\d+/federation"', page)
    assert "awi/sst" in page and "Dask client" in page

    info = fed.info("awi/sst")
    text = repr(info)
    assert text.startswith("<DatasetInfo 'awi/sst'> test sst\nDimensions:  (time: 40, lat: 180")
    assert "    sst  (time, lat, lon) float32  chunks (5, 180, 360)" in text
    assert "\\x" not in text and len(text) < 1000  # no raw coordinate bytes
    assert "<h4>Data variables</h4>" in info._repr_html_()

    method = fed.describe("awi/scale")
    assert repr(method).startswith(
        "<MethodInfo 'awi/scale': method scale(data: xarray.DataArray, factor: float = 2.0)"
    )
    assert "Multiply data by a factor." in repr(method)
    assert "<td style=\"text-align: left;\">factor</td>" in method._repr_html_()

    with fed.traffic() as t:
        sst = fed.open_dataset("awi/sst").sst.mean(["lat", "lon"])
        chl = fed.open_dataset("geomar/chl").chl.mean(["lat", "lon"])
        (sst * chl).sum().compute()
    text = repr(t)
    assert re.match(r"<TrafficRecord: [\d.]+ [kM]?i?B across site borders in \d+ transfer", text)
    assert "awi -> client" in text or "geomar -> client" in text
    assert "Tasks run per site" in t._repr_html_()


def test_hub_log_names_addresses_users_can_reach(local_federation):
    log = local_federation.log("hub")
    port = local_federation.dashboard_port
    assert f"Federation page at http://127.0.0.1:{port}/federation" in log
    assert "0.0.0.0" not in log


@gen_test()
async def test_hub_on_all_interfaces_also_names_its_local_address():
    async with Scheduler(dashboard_address=":0", port=0) as scheduler:
        lines = hub_addresses(scheduler, None)
    assert f"(all interfaces; on this machine tcp://127.0.0.1:{scheduler.port})" in lines[0]
    assert re.fullmatch(
        r"Federation page at http://127\.0\.0\.1:\d+/federation \(all interfaces\)", lines[1]
    )


NODE = shutil.which("node")
JS_PACKAGE = Path(federation.__file__).parent / "js"


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_javascript_client_is_a_package_node_imports(local_federation, tmp_path):
    """The client as a package (``npm install <clone>/federation/js``), imported by name in
    Node (the hub-served URL is for browsers: Node refuses http: imports)."""
    package = json.loads((JS_PACKAGE / "package.json").read_text())
    assert (JS_PACKAGE / package["exports"]["."]["types"]).exists()
    (tmp_path / "package.json").write_text('{"name": "app", "private": true, "type": "module"}')
    # what `npm install ./federation/js` does for a local folder (Debian's nodejs has no npm)
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / package["name"]).symlink_to(JS_PACKAGE)
    (tmp_path / "main.mjs").write_text(
        'import Default, { Federation, FederationError, toRows } from "dask-federation-client";\n'
        "if (Default !== Federation || typeof toRows !== 'function') process.exit(3);\n"
        "const fed = new Federation(process.argv[2]);\n"
        "const sites = await fed.sites();\n"
        "console.log(JSON.stringify(sites.map((s) => s.name).sort()));\n"
        "try { await fed.dataset('awi/nope'); } catch (e) {\n"
        "  console.log(e instanceof FederationError, e.status); }\n"
    )
    url = f"http://127.0.0.1:{local_federation.dashboard_port}"
    run = subprocess.run(
        [NODE, "main.mjs", url], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    names, missing = run.stdout.splitlines()
    assert {"awi", "dkrz", "geomar"} <= set(json.loads(names))  # others may have joined
    assert missing == "true 404"


def test_moving_much_raw_data_warns_once_with_the_bytes(fed, data_root):
    """An element-wise product of two sites' fields fetches one field whole: one warning
    with the bytes. A reduction per site (the federation's usual case) warns nothing."""
    sst = fed.open_dataset("awi/sst").sst
    chl = fed.open_dataset("geomar/chl").chl
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (sst * chl).sum().compute()
        time.sleep(0.5)  # the warning travels on the client's stream; exactly one must come
    moves = [w for w in caught if issubclass(w.category, RawDataMoveWarning)]
    assert len(moves) == 1, [str(w.message) for w in caught]
    assert re.search(r"moves [\d.]+ MiB of data from site '(awi|geomar)' across site borders, "
                     r"\d+% of the raw bytes of (awi/sst|geomar/chl) \([\d.]+ MiB\)",
                     str(moves[0].message))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        xr.corr(sst.mean(["lat", "lon"]), chl.mean(["lat", "lon"]), dim="time").compute()
        time.sleep(0.5)
    assert not [w for w in caught if issubclass(w.category, RawDataMoveWarning)]


def _last_computation(dask_scheduler) -> dict:
    c = dask_scheduler.plugins["federation-moves"].recent[-1]
    return {"status": c.status, "keys": c.keys, "tasks": dict(c.tasks)}


def test_each_computation_counts_its_own_tasks_per_site(fed):
    """What the federation page's Computations table shows, next to the cumulative
    per-site counters: the tasks of one computation, per site."""
    sst = fed.open_dataset("awi/sst").sst.mean(["lat", "lon"])
    chl = fed.open_dataset("geomar/chl").chl.mean(["lat", "lon"])
    with fed.traffic() as t:
        xr.corr(sst, chl, dim="time").compute()
    last = fed.client.run_on_scheduler(_last_computation)
    assert last["status"] == "finished"
    assert last["tasks"] == t.tasks  # the same per-site counts the traffic record shows
    assert sum(last["tasks"].values()) == last["keys"]
    assert set(last["tasks"]) == {"awi", "geomar"}
