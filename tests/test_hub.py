"""The hub outside the session federation: preloaded into a plain ``dask scheduler``.

The demo's end-to-end run is in ``test_newuser`` (``--keep``, stopped by SIGTERM)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

from federation.local import LocalFederation, free_port

from .conftest import make_site, open_local


def test_preload_into_a_plain_dask_scheduler(tmp_path):
    """`dask scheduler --preload scheduler_plugins` is a hub too."""
    lf = LocalFederation(tmp_path / "logs", dashboard=False)
    port = free_port()
    lf.address = f"tcp://127.0.0.1:{port}"
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--dashboard-address", ":0", "--preload", "scheduler_plugins"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        cfg = make_site(tmp_path, "solo", "sst", "sst.zarr", size=10 * 180 * 360 * 4)
        lf.start_site(cfg)
        with lf.connect() as fed:
            assert list(fed.catalog()["dataset"]) == ["solo/sst"]
            with fed.traffic() as t:
                mean = fed.open_dataset("solo/sst").sst.mean().compute()
            np.testing.assert_allclose(mean, open_local(tmp_path / "solo" / "sst.zarr").sst.mean(),
                                       rtol=1e-5)
            assert t.tasks.keys() == {"solo"}
    finally:
        lf.close()
        scheduler.terminate()
        scheduler.wait(30)


def test_local_federation_chooses_another_port_when_its_port_was_taken(tmp_path):
    """A port free when chosen but taken before the hub binds it (another test's process
    got it) is chosen again, not a failed start."""
    lf = LocalFederation(tmp_path / "logs", dashboard=False)
    taken = lf.port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        with lf:
            assert lf.port != taken and lf.address.endswith(f":{lf.port}")
            with lf.connect() as fed:
                assert fed.sites() == {}
    assert "Address already in use" in lf.log("hub")  # the first try, logged


def test_hub_without_dashboard_pages_still_serves_its_http_api(tmp_path):
    """``dask federation hub --no-dashboard`` (as ``dask scheduler --no-dashboard``): no
    Bokeh pages, the HTTP API at the address its log names."""
    with LocalFederation(tmp_path / "logs", dashboard=False) as lf:
        log = lf.log("hub")
        assert "Federation page" not in log
        api = re.search(r"Federation HTTP API at (http://127\.0\.0\.1:\d+/\S+) \(no dashboard "
                        r"pages\)$", log, re.MULTILINE).group(1)
        with urllib.request.urlopen(f"{api}/sites", timeout=30) as r:
            assert json.load(r)["sites"] == []  # the API answers: no site registered yet
        page = api.split("/federation/")[0] + "/federation"
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(page, timeout=30)
        assert e.value.code == 404
