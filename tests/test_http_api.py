"""The hub's HTTP API, its JavaScript client (``node --test tests/js/``) and the explorer
page, against real hub and site processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from federation.local import LocalFederation
from scheduler_plugins.http.openapi import openapi_document

from .browser import DEEP_TEXT, Chromium, needs_chromium, run_in_chromium, save_artifact
from .conftest import make_site
from .wait import wait
from .webclient import API, request

JS_TESTS = Path(__file__).parent / "js"
NODE = shutil.which("node")

# -- HTTP helpers ----------------------------------------------------------------------------

OPENAPI = openapi_document()
REGISTRY = Registry().with_resource("urn:openapi", DRAFT202012.create_resource(OPENAPI))


def conforms(body: object, schema: str) -> None:
    """``body`` is valid against ``#/components/schemas/<schema>`` of openapi.json."""
    validator = Draft202012Validator(
        {"$ref": f"urn:openapi#/components/schemas/{schema}"}, registry=REGISTRY
    )
    errors = [e.message for e in validator.iter_errors(body)]
    assert not errors, errors


def wait_job(base: str, job: dict, token: str | None = None, timeout: float = 60) -> dict:
    """The job once it has finished (each status read checked against the schema)."""

    def finished() -> bool:
        nonlocal job
        status, _, job = request(base, "GET", f"{API}/jobs/{job['id']}", token=token)
        assert status == 200, job
        conforms(job, "Job")
        return job["status"] not in ("pending", "running")

    if job["status"] in ("pending", "running"):
        wait(finished, timeout, f"job {job['id']} to finish")
    return job


# -- fixtures ----------------------------------------------------------------------------------

#: The methods of the token-protected hub's one site.
OBS_TOOLS = '''
"""Tools the test site 'obs' shares."""
import numpy as np
import pandas as pd
import xarray as xr


def echo(x: int) -> int:
    """Return x unchanged."""
    return x


def series(n: int = 24, amplitude: float = 1.0) -> xr.DataArray:
    """A daily sine wave of n days."""
    time = pd.date_range("2020-01-01", periods=n)
    return xr.DataArray(amplitude * np.sin(np.arange(n) / 4), dims="time",
                        coords={"time": time}, name="wave", attrs={"units": "1"})
'''

#: token -> user (for federation.grants); tokens of the tokens file are anonymous
TOKENS = {"secret": "alice", "other": "bob"}
GRANTS = {"alice": ["obs/*"], "bob": ["obs/series"]}


@pytest.fixture(scope="module")
def open_hub(local_federation) -> str:
    """The session hub (no tokens): its HTTP base URL."""
    return f"http://127.0.0.1:{local_federation.dashboard_port}"


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """A hub with access tokens (from config and from a file) and one small site."""
    root = tmp_path_factory.mktemp("secured")
    tokens_file = root / "tokens.txt"
    tokens_file.write_text("# hub tokens\nfiletoken\n\n")
    cfg = make_site(
        root, "obs", "sst", "sst.zarr", tools=OBS_TOOLS, size=5 * 180 * 360 * 4,
        methods={"echo": "obs_tools:echo", "series": "obs_tools:series"},
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DASK_FEDERATION__HTTP__TOKENS", json.dumps(TOKENS))
        mp.setenv("DASK_FEDERATION__HTTP__TOKENS_FILE", str(tokens_file))
        mp.setenv("DASK_FEDERATION__GRANTS", json.dumps(GRANTS))
        lf = LocalFederation(root / "logs")
        try:
            lf.start_hub()  # the hub reads the tokens and grants from its environment
            lf.start_site(cfg)
        except BaseException:
            lf.close()
            raise
    try:
        lf.base = f"http://127.0.0.1:{lf.dashboard_port}"
        lf.tokens_file = tokens_file
        yield lf
    finally:
        lf.close()


# -- read-only routes ---------------------------------------------------------------------------


def test_sites_catalog_dataset(open_hub):
    status, hdrs, body = request(open_hub, "GET", f"{API}/sites")
    assert status == 200 and hdrs["Content-Type"].startswith("application/json")
    assert hdrs["Access-Control-Allow-Origin"] == "*"
    sites = {s["name"]: s for s in body["sites"]}
    assert set(sites) == {"awi", "geomar", "dkrz"}
    assert sites["awi"]["status"] == "connected" and len(sites["awi"]["workers"]) == 2
    assert sites["awi"]["datasets"] == ["sst"] and "echo" in sites["awi"]["methods"]
    assert sites["awi"]["memory_limit"] == 2 * 2**30 and sites["awi"]["nthreads"] == 4
    for site in body["sites"]:
        conforms(site, "Site")

    status, _, body = request(open_hub, "GET", f"{API}/catalog")
    assert status == 200
    rows = {r["dataset"]: r for r in body["datasets"]}
    assert {"awi/sst", "geomar/chl", "dkrz/t2m"} <= set(rows)
    assert rows["awi/sst"]["dims"] == {"time": 40, "lat": 180, "lon": 360}
    assert rows["awi/sst"]["kind"] == "dataset" and rows["awi/sst"]["dtype"] == "float32"
    for row in body["datasets"]:
        conforms(row, "CatalogRow")

    status, _, ds = request(open_hub, "GET", f"{API}/datasets/awi/sst")
    assert status == 200
    conforms(ds, "Dataset")
    assert ds["dataset"] == "awi/sst" and ds["data_vars"] == ["sst"]
    variables = {v["name"]: v for v in ds["variables"]}
    assert variables["sst"]["shape"] == [40, 180, 360] and "values" not in variables["sst"]
    assert variables["sst"]["attrs"]["units"] == "degC"
    assert len(variables["lat"]["values"]) == 180
    assert variables["time"]["values"][0].startswith("2000-01-01")  # dates as ISO strings
    assert "path" not in json.dumps(ds)  # never where the data are


def test_unknown_names_are_404_with_close_matches(open_hub):
    status, _, body = request(open_hub, "GET", f"{API}/datasets/awi/ssst")
    assert status == 404
    conforms(body, "Error")
    assert body["error"]["code"] == "not_found"
    assert "Did you mean 'awi/sst'" in body["error"]["message"]
    status, _, body = request(open_hub, "GET", f"{API}/methods/awi/ecko")
    assert status == 404 and "Did you mean 'awi/echo'" in body["error"]["message"]
    status, _, body = request(open_hub, "POST", f"{API}/methods/nosite/echo", {"x": 1})
    assert status == 404
    status, _, body = request(open_hub, "GET", f"{API}/jobs/doesnotexist")
    assert status == 404 and "no job" in body["error"]["message"]
    status, _, body = request(open_hub, "GET", f"{API}/nothing/here")
    assert status == 404 and "openapi.json" in body["error"]["message"]


def test_methods_and_their_schema(open_hub):
    status, _, body = request(open_hub, "GET", f"{API}/methods")
    assert status == 200
    methods = {m["ref"]: m for m in body["methods"]}
    assert {"awi/echo", "awi/scale", "awi/where", "awi/fail", "awi/links"} <= set(methods)
    assert methods["awi/links"]["kind"] == "workflow"
    for m in body["methods"]:
        conforms(m, "Method")

    status, _, m = request(open_hub, "GET", f"{API}/methods/awi/scale")
    assert status == 200
    conforms(m, "Method")
    assert m["signature"] == "(data: xarray.DataArray, factor: float = 2.0) -> xarray.DataArray"
    assert m["summary"] == "Multiply data by a factor."
    schema = m["schema"]
    Draft202012Validator.check_schema(schema)
    assert schema["required"] == ["data"] and schema["additionalProperties"] is False
    assert schema["properties"]["factor"] == {"type": "number", "title": "factor", "default": 2.0}
    assert schema["properties"]["data"]["x-federation-type"] == "xarray.DataArray"


# -- calls ------------------------------------------------------------------------------------


def test_call_small_result_inline(open_hub):
    status, _, job = request(open_hub, "POST", f"{API}/methods/awi/echo", {"x": 41})
    assert status == 200, job
    conforms(job, "Job")
    assert job["status"] == "finished" and job["result"] == 41
    assert job["progress"]["fraction"] == 1.0
    # it ran at the owning site
    status, _, job = request(open_hub, "POST", f"{API}/methods/awi/where", {})
    assert status == 200 and job["result"].startswith("awi-")
    # the job stays readable, and DELETE of a finished job changes nothing
    status, _, again = request(open_hub, "GET", f"{API}/jobs/{job['id']}")
    assert status == 200 and again["result"] == job["result"]
    status, _, again = request(open_hub, "DELETE", f"{API}/jobs/{job['id']}")
    assert status == 200 and again["status"] == "finished"


def test_call_with_array_arguments_and_results(open_hub):
    """An xarray argument in JSON form in, a DataArray in JSON form out."""
    data = {"type": "DataArray", "name": "t", "dims": ["time"], "dtype": "float64",
            "data": [1.0, None, 3.0],
            "coords": {"time": {"dims": ["time"], "data": ["2020-01-01", "2020-01-02",
                                                           "2020-01-03"],
                                "dtype": "datetime64[ns]"}}}
    status, _, job = request(open_hub, "POST", f"{API}/methods/awi/scale",
                             {"data": data, "factor": 3})
    assert status == 200, job
    result = job["result"]
    conforms(result, "ArrayJSON")
    assert result["type"] == "DataArray" and result["dims"] == ["time"]
    assert result["data"] == [3.0, None, 9.0]  # NaN travels as null
    assert result["coords"]["time"]["data"][0].startswith("2020-01-01")
    # a federated dataset as argument (read lazily where it lives); then cancel the job
    arg = {"data": {"dataset": "awi/sst", "variable": "sst"}, "factor": 0.5}
    status, _, job = request(open_hub, "POST", f"{API}/methods/awi/scale?wait=0", arg)
    assert status == 202 and job["status"] in ("pending", "running"), job
    status, _, job = request(open_hub, "DELETE", f"{API}/jobs/{job['id']}")
    assert status == 200 and job["status"] in ("cancelled", "finished"), job
    assert wait_job(open_hub, job)["status"] in ("cancelled", "finished")


def test_long_call_is_a_job_with_progress(open_hub):
    """A workflow with wait=0 answers 202 + Location at once; the job is polled."""
    args = {"sst": "awi/sst", "chl": "geomar/chl", "t2m": "dkrz/t2m"}
    status, hdrs, job = request(open_hub, "POST", f"{API}/methods/awi/links?wait=0", args)
    assert status == 202, job
    conforms(job, "Job")
    assert hdrs["Location"] == f"{API}/jobs/{job['id']}" == job["href"]
    job = wait_job(open_hub, job)
    assert job["status"] == "finished", job
    assert set(job["result"]) == {"chl", "t2m"}
    assert -1 <= job["result"]["chl"] <= 1
    assert job["progress"] == {"done": job["progress"]["total"],
                               "total": job["progress"]["total"], "fraction": 1.0}
    # the same with "Prefer: respond-async"
    status, _, job = request(open_hub, "POST", f"{API}/methods/awi/echo", {"x": 1},
                             headers={"Prefer": "respond-async"})
    assert status == 202
    assert wait_job(open_hub, job)["result"] == 1


def test_bad_calls_are_400_with_the_schema(open_hub):
    status, _, body = request(open_hub, "POST", f"{API}/methods/awi/echo", {"x": "seven"})
    assert status == 400
    conforms(body, "Error")
    err = body["error"]
    assert err["code"] == "bad_arguments"
    assert "parameter 'x' expects int" in err["message"] and "'seven'" in err["message"]
    assert err["schema"]["required"] == ["x"]
    status, _, body = request(open_hub, "POST", f"{API}/methods/awi/echo", {})
    assert status == 400 and "missing a required argument: 'x'" in body["error"]["message"]
    status, _, body = request(open_hub, "POST", f"{API}/methods/awi/echo", {"x": 1, "y": 2})
    assert status == 400 and "unexpected keyword argument 'y'" in body["error"]["message"]
    status, _, body = request(open_hub, "POST", f"{API}/methods/awi/echo", raw=b"{nope")
    assert status == 400 and body["error"]["code"] == "bad_json"
    status, _, body = request(open_hub, "POST", f"{API}/methods/awi/echo", [1])
    assert status == 400 and "JSON object" in body["error"]["message"]
    status, _, body = request(open_hub, "POST", f"{API}/methods/awi/echo?wait=soon", {"x": 1})
    assert status == 400 and "wait" in body["error"]["message"]
    status, _, body = request(open_hub, "POST", f"{API}/methods/awi/scale",
                              {"data": {"dataset": "awi/sst", "variable": "nope"}})
    assert status == 400 and "has no variable 'nope'" in body["error"]["message"]
    status, _, body = request(open_hub, "POST", f"{API}/methods/awi/scale",
                              {"data": {"dataset": "awi/sstt"}})
    assert status == 404 and "Did you mean 'awi/sst'" in body["error"]["message"]


def test_failing_method_is_500_with_the_remote_error(open_hub):
    status, _, body = request(open_hub, "POST", f"{API}/methods/awi/fail", {"message": "boom"})
    assert status == 500
    conforms(body, "Error")
    err = body["error"]
    assert err["code"] == "method_failed" and err["type"] == "MethodError"
    assert "method 'awi/fail' failed at site 'awi': ValueError: boom" in err["message"]
    assert err["job"]["status"] == "error"
    status, _, job = request(open_hub, "GET", f"{API}/jobs/{err['job']['id']}")
    assert status == 200 and job["status"] == "error" and "boom" in job["error"]["message"]


def test_traffic(open_hub, fed):
    import xarray as xr

    sst = fed.open_dataset("awi/sst").sst.mean(["lat", "lon"])
    chl = fed.open_dataset("geomar/chl").chl.mean(["lat", "lon"])
    xr.corr(sst, chl, dim="time").compute()
    status, _, body = request(open_hub, "GET", f"{API}/traffic")
    assert status == 200
    conforms(body, "Traffic")
    assert body["columns"] == ["source", "destination", "bytes", "nbytes", "transfers"]
    assert body["total"] == sum(r[2] for r in body["rows"]) > 0
    assert {r[1] for r in body["rows"]} & {"client", "awi", "geomar"}
    assert body["tasks"]["awi"] > 0 and body["window"] is None
    # one history sample later
    status, _, minute = wait(lambda: (r := request(open_hub, "GET", f"{API}/traffic?window=60"))
                             [2].get("total") and r, 30, "a traffic history sample")
    assert status == 200 and minute["window"] == 60
    assert 0 < minute["total"] <= body["total"] + 10**6
    status, _, err = request(open_hub, "GET", f"{API}/traffic?window=-5")
    assert status == 400 and "window" in err["error"]["message"]


def test_openapi_and_static_files(open_hub):
    status, _, doc = request(open_hub, "GET", f"{API}/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1")
    validate_openapi(doc)  # a valid OpenAPI 3.1 document (generated from the records)
    assert doc["servers"] == [{"url": API}]
    for path in ("/sites", "/catalog", "/datasets/{site}/{name}", "/methods",
                 "/methods/{site}/{name}", "/jobs/{id}", "/traffic"):
        assert path in doc["paths"]
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    status, _, index = request(open_hub, "GET", f"{API}/")
    assert status == 200 and index["openapi"] == f"{API}/openapi.json"

    js_dir = Path(__file__).parent.parent / "federation" / "js"
    for name, ctype in (("client.js", "text/javascript"), ("client.d.ts", "application/typescript"),
                        ("explorer", "text/html")):
        status, hdrs, text = request(open_hub, "GET", f"/federation/{name}")
        assert status == 200 and hdrs["Content-Type"].startswith(ctype)
        assert hdrs["Access-Control-Allow-Origin"] == "*"  # importable from other origins
        local = js_dir / ("explorer.html" if name == "explorer" else name)
        assert text == local.read_text()
    # CORS preflight of a call from another origin
    status, hdrs, _ = request(open_hub, "OPTIONS", f"{API}/methods/awi/echo",
                              headers={"Origin": "http://elsewhere",
                                       "Access-Control-Request-Method": "POST"})
    assert status == 204 and "Authorization" in hdrs["Access-Control-Allow-Headers"]


# -- access tokens ------------------------------------------------------------------------------


def test_tokens_are_required(secured):
    base = secured.base
    status, hdrs, body = request(base, "GET", f"{API}/sites")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    assert hdrs["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in body["error"]["message"]
    status, _, body = request(base, "GET", f"{API}/sites", headers={"Authorization": "Basic x"})
    assert status == 401
    status, _, body = request(base, "GET", f"{API}/catalog", token="wrong")
    assert status == 403 and body["error"]["code"] == "forbidden"
    for route in ("sites", "catalog", "datasets/obs/sst", "methods", "methods/obs/echo",
                  "traffic", "jobs/x"):
        assert request(base, "GET", f"{API}/{route}")[0] == 401, route
        assert request(base, "GET", f"{API}/{route}", token="wrong")[0] == 403, route
    assert request(base, "POST", f"{API}/methods/obs/echo", {"x": 1})[0] == 401
    status, _, body = request(base, "GET", f"{API}/sites", token="secret")
    assert status == 200 and [s["name"] for s in body["sites"]] == ["obs"]
    # no token needed for the API description and the client code
    assert request(base, "GET", f"{API}/openapi.json")[0] == 200
    assert request(base, "GET", "/federation/client.js")[0] == 200


def test_token_file_is_reread_and_jobs_are_per_token(secured):
    base = secured.base
    assert request(base, "GET", f"{API}/sites", token="filetoken")[0] == 200
    secured.tokens_file.write_text("rotated\n")
    later = time.time() + 5
    os.utime(secured.tokens_file, (later, later))
    assert request(base, "GET", f"{API}/sites", token="filetoken")[0] == 403
    assert request(base, "GET", f"{API}/sites", token="rotated")[0] == 200

    status, _, job = request(base, "POST", f"{API}/methods/obs/echo", {"x": 7}, token="secret")
    assert status == 200 and job["result"] == 7
    assert request(base, "GET", f"{API}/jobs/{job['id']}", token="secret")[0] == 200
    status, _, body = request(base, "GET", f"{API}/jobs/{job['id']}", token="other")
    assert status == 404  # another token's job does not exist for you


def test_calls_need_grants_of_the_tokens_user(secured):
    """federation.grants apply to HTTP calls as the token's user (alice: obs/*, bob:
    obs/series only; file tokens are anonymous)."""
    base = secured.base
    status, _, body = request(base, "POST", f"{API}/methods/obs/echo", {"x": 1}, token="other")
    assert status == 403 and body["error"]["code"] == "no_grant"
    assert "user 'bob' has no grant for 'obs/echo'" in body["error"]["message"]
    status, _, body = request(base, "POST", f"{API}/methods/obs/series", {"n": 2},
                              token="other")
    assert status == 200 and body["result"]["shape"] == [2]
    secured.tokens_file.write_text("anon\n")
    later = time.time() + 10
    os.utime(secured.tokens_file, (later, later))
    status, _, body = request(base, "POST", f"{API}/methods/obs/series", {}, token="anon")
    assert status == 403 and "an anonymous caller" in body["error"]["message"]
    # reading the catalog needs no grant
    assert request(base, "GET", f"{API}/catalog", token="anon")[0] == 200


# -- the JavaScript client under Node ------------------------------------------------------------


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_javascript_client_with_node(open_hub, secured):
    env = dict(
        os.environ,
        FEDERATION_HUB_URL=open_hub,
        FEDERATION_SECURE_URL=secured.base,
        FEDERATION_TOKEN="secret",
    )
    files = sorted(str(f) for f in JS_TESTS.glob("*.test.mjs"))  # = node --test tests/js/
    proc = subprocess.run(
        [NODE, "--test", *files], env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "# fail 0" in proc.stdout


# -- the explorer page in Chromium -------------------------------------------------------------


@needs_chromium
def test_explorer_in_chromium(secured, tmp_path):
    """Lists datasets and methods, renders forms from schemas, calls methods, shows results."""
    url = f"{secured.base}/federation/explorer#token=secret&method=obs/series"

    async def steps(browser: Chromium) -> None:
        await browser.navigate(url)
        await browser.wait_for("document.body.dataset.loaded === 'true'", what="catalog loaded")
        text = await browser.evaluate(DEEP_TEXT)
        assert "obs/sst" in text and "obs/echo" in text and "obs/series" in text
        assert "connected" in text
        # the form of obs/series, from its JSON schema, with its defaults
        await browser.wait_for("!!document.getElementById('arg-n')", what="form of obs/series")
        assert await browser.evaluate("document.getElementById('arg-n').value") == "24"
        assert await browser.evaluate("document.getElementById('arg-n').type") == "number"
        await browser.evaluate("document.getElementById('arg-n').value = '30'")
        await browser.evaluate("document.getElementById('run').click()")
        await browser.wait_for("document.body.dataset.called === 'true'", what="series result")
        result = json.loads(await browser.evaluate(
            "document.getElementById('result-json').textContent"))
        assert result["type"] == "DataArray" and result["shape"] == [30]
        assert await browser.evaluate("!!document.getElementById('plot')")  # a line plot
        assert "2020-01-30" in await browser.evaluate(
            "document.getElementById('result').textContent")  # and a table
        save_artifact(await browser.screenshot(tmp_path / "explorer-series.png"))

        # pick echo from the list of methods, call it; then a bad argument shows the error
        await browser.evaluate(
            "[...document.querySelectorAll('#methods tr.pick')].find("
            "tr => tr.textContent.includes('obs/echo')).click()")
        await browser.wait_for("document.getElementById('method-title').textContent"
                               ".includes('obs/echo')", what="form of obs/echo")
        await browser.evaluate("document.body.dataset.called = ''; "
                               "document.getElementById('arg-x').value = '41'; "
                               "document.getElementById('run').click()")
        await browser.wait_for("document.body.dataset.called === 'true'", what="echo result")
        assert await browser.evaluate(
            "document.getElementById('result-json').textContent") == "41"
        # (the browser's own form validation would stop 1.5 for a step-1 field: bypass it)
        await browser.evaluate("document.getElementById('arg-x').value = '1.5'; "
                               "document.getElementById('method-form').dispatchEvent("
                               "new Event('submit', {cancelable: true}))")
        error = await browser.wait_for("document.getElementById('error').textContent",
                                       what="error message")
        assert "expects int" in error and "HTTP 400" in error
        shot = await browser.screenshot(tmp_path / "explorer.png")
        save_artifact(shot)
        assert not browser.errors, browser.errors

    run_in_chromium(tmp_path, steps)


@needs_chromium
def test_explorer_without_token_shows_the_error(secured, tmp_path):
    async def steps(browser: Chromium) -> None:
        await browser.navigate(f"{secured.base}/federation/explorer")
        error = await browser.wait_for("document.getElementById('error').textContent",
                                       what="auth error")
        assert "access token" in error and "HTTP 401" in error

    run_in_chromium(tmp_path, steps)

