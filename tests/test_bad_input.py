"""Bad input from clients and on the wire: a clear error each, and the hub keeps serving.

Together with ``BAD_CONFIGS`` in test_sites.py (ten kinds of broken site configs), the
name-taken, unreachable-hub and replica-mismatch tests, this is the table of bad input
the federation answers with a clear message.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

from federation import ArgumentError, ResultError, UnknownDatasetError, UnknownMethodError

CLIENT_CASES = [
    ("unknown dataset", lambda f: f.open_dataset("awi/sstt"), UnknownDatasetError,
     "Did you mean 'awi/sst'"),
    ("unknown site", lambda f: f.open_dataset("nowhere/sst"), UnknownDatasetError,
     "unknown dataset 'nowhere/sst'.* Available: .*awi/sst"),
    ("dataset name not a string", lambda f: f.open_dataset(42), TypeError,
     "string like 'awi/sst'"),
    ("unknown chunk dimension", lambda f: f.open_dataset("awi/sst", chunks={"depth": 3}),
     ValueError, r"unknown dimension\(s\) \['depth'\]"),
    ("chunk size not a number", lambda f: f.open_dataset("awi/sst", chunks={"time": "lots"}),
     ValueError, "invalid chunks .* for awi/sst"),
    ("chunk size zero", lambda f: f.open_dataset("awi/sst", chunks={"time": 0}),
     ValueError, "invalid chunks .* for awi/sst"),
    ("oversized request",
     lambda f: f.open_dataset("awi/sst", chunks={"time": 1, "lat": 1, "lon": 1}),
     ValueError, "2,592,000 read tasks .* use larger chunks"),
    ("unknown method", lambda f: f.method("awi/ech"), UnknownMethodError, "Did you mean"),
    ("method name not a string", lambda f: f.method(None), TypeError, "string like"),
    ("wrong argument type", lambda f: f.method("awi/echo")([1]), ArgumentError,
     "parameter 'x' expects int"),
    ("missing argument", lambda f: f.call("awi/echo"), ArgumentError,
     "missing a required argument: 'x'"),
    ("bad result name", lambda f: f.publish_result("../etc", xr.DataArray([1.0])),
     ResultError, "result name '../etc' is not allowed"),
    ("result at unknown site",
     lambda f: f.publish_result("x", xr.DataArray(np.ones(2)), site="nowhere"),
     ResultError, "unknown site 'nowhere'"),
    ("provenance of a plain dataset", lambda f: f.provenance("awi/sst"), UnknownDatasetError,
     "is a dataset, not a published result"),
]


@pytest.mark.parametrize(
    "case,call,error,message", CLIENT_CASES, ids=[c[0] for c in CLIENT_CASES]
)
def test_bad_client_call(fed, case, call, error, message):
    with pytest.raises(error, match=message):
        call(fed)
    assert len(fed.catalog()) >= 3  # the hub keeps serving


def test_garbage_on_the_hub_port(local_federation, fed):
    port = int(local_federation.address.rsplit(":", 1)[1])
    for payload in (b"GET / HTTP/1.0\r\n\r\n", os.urandom(4096), b"\x00" * 64):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(payload)
            time.sleep(0.2)
    assert float(fed.open_dataset("awi/sst").sst[0, 0, 0].compute()) == pytest.approx(
        float(fed.open_dataset("awi/sst").sst[0, 0, 0].compute())
    )
    assert len(fed.catalog()) >= 3


@pytest.mark.parametrize(
    "resources,reason",
    [
        ("site:ghost=1", "claims site 'ghost', which has not registered"),
        ("site:awi=1000000,dataset:awi/secret=1000000",
         "claims dataset 'awi/secret', which site 'awi' does not hold"),
    ],
    ids=["unregistered site", "dataset its site does not hold"],
)
def test_worker_claiming_a_site_it_is_not_is_refused(local_federation, fed, resources, reason):
    before = set(fed.client.scheduler_info()["workers"])
    worker = subprocess.Popen(
        [sys.executable, "-m", "dask", "worker", local_federation.address, "--no-nanny",
         "--resources", resources, "--nthreads", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        refused = []
        while time.monotonic() < deadline and not refused:
            events = fed.client.get_events("federation")
            refused = [m for _, m in events if m.get("action") == "worker-refused"
                       and reason in m["reason"]]
            time.sleep(0.3)
        assert refused, "the impostor was not refused"
        time.sleep(1)
        assert set(fed.client.scheduler_info()["workers"]) == before
        # awi's reads still go to awi's real workers only
        assert float(fed.open_dataset("awi/sst").sst.mean().compute()) > 0
    finally:
        worker.kill()
        worker.wait()
