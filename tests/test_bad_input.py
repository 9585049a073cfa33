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

from .wait import wait

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
        wait(lambda: [m for _, m in fed.client.get_events("federation")
                      if m.get("action") == "worker-refused" and reason in m["reason"]],
             60, "the impostor refused")
        time.sleep(1)  # a negative check: it stays out
        assert set(fed.client.scheduler_info()["workers"]) == before
        # awi's reads still go to awi's real workers only
        assert float(fed.open_dataset("awi/sst").sst.mean().compute()) > 0
    finally:
        worker.kill()
        worker.wait()


BAD_VALUES = [
    ("memory_limit: lots", "memory_limit 'lots' is not a size: use e.g. 4GiB"),
    ("memory_limit: -5", "memory_limit -5 is not a size"),
    ("datasets: {x: {path: p, egress: aggregated, max_egress_bytes: -5}}",
     r"max_egress_bytes -5 is not a positive size like 50MB \(to let nothing leave"),
    ("datasets: {x: {path: p, egress: aggregated, max_egress_bytes: 0B}}",
     "max_egress_bytes '0B' is not a positive size"),
]


@pytest.mark.parametrize("line,message", BAD_VALUES, ids=[v[0] for v in BAD_VALUES])
def test_bad_config_values_name_the_key_and_the_fix(line, message):
    from federation.config import ConfigError, parse_site_config

    with pytest.raises(ConfigError, match=message):
        parse_site_config(f"site: awi\n{line}\n")
    # the legitimate versions pass
    parse_site_config("site: awi\nmemory_limit: 4GiB\n"
                      "datasets: {x: {path: p, egress: aggregated, max_egress_bytes: 5MB}}\n")


def test_bad_memory_limit_stops_the_site_without_a_ghost(tmp_path, local_federation, fed):
    (tmp_path / "ghost.yaml").write_text(
        "site: ghost\nmemory_limit: lots\ndatasets:\n  x: {path: x.zarr}\n"
    )
    (tmp_path / "x.zarr").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "federation.cli", "site", str(tmp_path / "ghost.yaml"),
         "--hub", local_federation.address], capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "memory_limit 'lots' is not a size" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "ghost" not in fed.sites()


def test_negative_chunks_name_the_dimension(fed):
    with pytest.raises(ValueError, match="invalid chunks .* for awi/sst"):
        fed.open_dataset("awi/sst", chunks={"time": -3})


def _http(local_federation, method: str, path: str, data: bytes | None = None):
    import json
    import urllib.error
    import urllib.request

    url = f"http://127.0.0.1:{local_federation.dashboard_port}/federation/api/v1/{path}"
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers["Content-Type"], json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], json.loads(e.read())


HTTP_CASES = [
    ("nested JSON", "POST", "methods/awi/echo", b"[" * 100_000 + b"]" * 100_000, 400,
     "nests JSON arrays/objects too deeply"),
    ("window=nan", "GET", "traffic?window=nan", None, 400, "'nan' is not a positive number"),
    ("window=inf", "GET", "traffic?window=inf", None, 400, "'inf' is not a positive number"),
    ("wait=-1", "POST", "methods/awi/echo?wait=-1", b'{"x": 1}', 400,
     "wait='-1' is not a number of seconds >= 0"),
    ("wait=nan", "POST", "methods/awi/echo?wait=nan", b'{"x": 1}', 400, "wait='nan'"),
    ("unknown path under jobs/", "GET", "jobs/abc/def", None, 404, "no API route"),
    ("unknown job", "GET", "jobs/abc", None, 404, "no job 'abc'"),
    ("body too large", "POST", "methods/awi/echo", b'{"x": "' + b"a" * 11_000_000 + b'"}',
     413, "more than federation.http.max-body-bytes"),
]


@pytest.mark.parametrize(
    "case,method,path,data,status,message", HTTP_CASES, ids=[c[0] for c in HTTP_CASES]
)
def test_bad_http_input_is_a_json_error(local_federation, case, method, path, data, status,
                                        message):
    got, content_type, body = _http(local_federation, method, path, data)
    assert (got, content_type.split(";")[0]) == (status, "application/json"), body
    assert message in body["error"]["message"]
    # the legitimate version works
    assert _http(local_federation, "POST", "methods/awi/echo?wait=10", b'{"x": 1}')[2][
        "result"] == 1
