"""Shared methods, workflows and results against real hub and site processes."""

from __future__ import annotations

import inspect
import pydoc

import numpy as np
import pytest
import xarray as xr
from distributed import get_task_stream

from federation import ArgumentError, MethodError, ResultError, UnknownMethodError
from federation.local import LocalFederation

from .conftest import AWI_METHODS, AWI_TOOLS, make_site, open_local, site_path, worker_sites
from .wait import wait


def test_methods_are_listed_and_described(fed):
    methods = fed.methods()
    assert list(methods.columns) == ["method", "site", "kind", "signature", "summary"]
    rows = methods.set_index("method")
    assert set(rows.index) == {"awi/echo", "awi/scale", "awi/where", "awi/fail", "awi/links"}
    assert rows.loc["awi/links", "kind"] == "workflow"
    assert rows.loc["awi/scale", "signature"] == (
        "(data: xarray.DataArray, factor: float = 2.0) -> xarray.DataArray"
    )
    assert rows.loc["awi/echo", "summary"] == "Return x unchanged."
    info = fed.describe("awi/scale")
    assert info.parameters[0].schema["x-federation-type"] == "xarray.DataArray"
    assert info.parameters[1].schema == {"type": "number"}
    assert fed.describe("awi/echo").returns == {"type": "integer"}
    # names and schemas only: no code, no paths
    assert "return data * factor" not in repr(info.to_wire())
    assert fed.sites()["awi"]["methods"] == ["echo", "fail", "links", "scale", "where"]


def test_proxy_has_the_remote_signature_and_help(fed):
    scale = fed.method("awi/scale")
    assert str(inspect.signature(scale)) == (
        "(data: xarray.DataArray, factor: float = 2.0) -> xarray.DataArray"
    )
    assert scale.__doc__.startswith("Multiply data by a factor.")
    text = pydoc.render_doc(scale, renderer=pydoc.plaintext)
    assert "scale(data: xarray.DataArray, factor: float = 2.0)" in text
    assert "shared by site 'awi'" in text


def test_arguments_are_validated_before_submission(fed):
    echo = fed.method("awi/echo")
    with pytest.raises(ArgumentError, match=r"parameter 'x' expects int .* got 'seven'"):
        echo("seven")
    with pytest.raises(ArgumentError, match="missing a required argument: 'x'"):
        echo()
    with pytest.raises(ArgumentError, match="unexpected keyword argument 'y'"):
        echo(1, y=2)
    with pytest.raises(ArgumentError, match="expects xarray.DataArray, got str"):
        fed.method("awi/scale")("not an array")
    with pytest.raises(UnknownMethodError, match="Did you mean 'awi/echo'"):
        fed.method("awi/ecko")


def test_method_runs_only_at_its_site(fed):
    assert fed.call("awi/echo", 41).result(timeout=30) == 41
    sites = worker_sites(fed)
    with get_task_stream(client=fed.client) as stream:
        name = fed.method("awi/where")().compute()
    assert name.startswith("awi-")
    assert {sites[e["worker"]] for e in stream.data} == {"awi"}


def test_method_applied_to_another_sites_dataset_composes(fed, data_root):
    """A method at awi on geomar's data; its lazy result feeds a further computation."""
    chl = fed.open_dataset("geomar/chl").chl.mean(["lat", "lon"])  # reduced at geomar
    scaled = fed.method("awi/scale")(chl, factor=3.0)  # lazy: a Delayed
    sst = fed.open_dataset("awi/sst").sst.mean(["lat", "lon"])
    sites = worker_sites(fed)
    with get_task_stream(client=fed.client) as stream, fed.traffic() as t:
        out, sst_mean = fed.client.compute([scaled, sst], sync=True)
    local = open_local(site_path(data_root, "geomar")).chl.mean(["lat", "lon"])
    xr.testing.assert_allclose(out, 3.0 * local)
    runs = {sites[e["worker"]] for e in stream.data if "run_method" in str(e["key"])}
    assert runs == {"awi"}
    # only the reduced series crossed from geomar
    assert t.total < 50_000
    np.testing.assert_allclose(
        float(xr.corr(out, sst_mean, dim="time")),
        float(xr.corr(local, open_local(site_path(data_root, "awi")).sst.mean(["lat", "lon"]),
                      dim="time")),
        rtol=1e-4,  # float32 sums in another order
    )


def test_arguments_are_validated_again_at_the_site(fed):
    from federation.sitecalls import run_method

    future = fed.client.submit(run_method, "awi/echo", "seven", pure=False)  # skips the proxy
    with pytest.raises(ArgumentError, match="awi/echo: parameter 'x'"):
        future.result(timeout=30)


def test_remote_failure_names_site_method_and_traceback(fed):
    future = fed.call("awi/fail", "ice too thin")
    with pytest.raises(MethodError) as err:
        future.result(timeout=30)
    msg = str(err.value)
    assert "method 'awi/fail' failed at site 'awi': ValueError: ice too thin" in msg
    assert "Remote traceback (site 'awi')" in msg and "awi_tools.py" in msg


def test_workflow_spans_three_sites(fed, data_root):
    with get_task_stream(client=fed.client) as stream:
        links = fed.call("awi/links", sst="awi/sst", chl="geomar/chl", t2m="dkrz/t2m").result(
            timeout=120
        )
    s = open_local(site_path(data_root, "awi")).sst.mean(["lat", "lon"])
    c = open_local(site_path(data_root, "geomar")).chl.mean(["lat", "lon"])
    t = open_local(site_path(data_root, "dkrz")).t2m.sel(lat=slice(-30, 30)).mean(["lat", "lon"])
    np.testing.assert_allclose(links["chl"], float(xr.corr(s, c, dim="time")), rtol=1e-6)
    np.testing.assert_allclose(links["t2m"], float(xr.corr(s, t, dim="time")), rtol=1e-6)
    sites = worker_sites(fed)
    ran = {sites[e["worker"]] for e in stream.data}
    assert ran == {"awi", "geomar", "dkrz"}  # the workflow's reads ran where the data are


def test_publish_reopen_and_provenance(fed, local_federation, data_root):
    with local_federation.connect() as publisher:
        sst = publisher.open_dataset("awi/sst").sst
        anomaly = (sst - sst.mean("time")).mean(["lat", "lon"]).rename("sst_anomaly")
        ref = publisher.publish_result("sst-anomaly", anomaly)
        assert ref == "awi/results/sst-anomaly"
        assert "awi/results/sst-anomaly" in set(publisher.catalog()["dataset"])

        with pytest.raises(ResultError, match="already exists; pass overwrite=True"):
            publisher.publish_result("sst-anomaly", anomaly)
        publisher.publish_result("sst-anomaly", anomaly * 1, overwrite=True)
        with pytest.raises(ResultError, match="site 'geomar' does not store results"):
            publisher.publish_result("chl", publisher.open_dataset("geomar/chl").chl.mean())

    # another client, after the publisher disconnected
    ds = fed.open_dataset("awi/results/sst-anomaly")
    local = open_local(site_path(data_root, "awi")).sst
    xr.testing.assert_allclose(
        ds.sst_anomaly.compute(), (local - local.mean("time")).mean(["lat", "lon"]),
        check_dim_order=False,
    )
    prov = fed.provenance("awi/results/sst-anomaly")
    assert prov["datasets"] == [
        {"dataset": "awi/sst", "version": fed.info("awi/sst").version}
    ]
    assert prov["methods"] == []
    # without TLS nobody is identified; what the client said about itself is a claim
    assert prov["published_at"] and prov["published_by"] == "anonymous"
    assert "@" in prov["claims"]["published_by"]
    assert prov["dask_federation"] == "0.1.0"
    assert (data_root / "awi" / "results" / "sst-anomaly.zarr").is_dir()


def test_result_of_a_method_records_the_method(fed):
    chl = fed.open_dataset("geomar/chl").chl.mean(["lat", "lon"])
    scaled = fed.method("awi/scale")(chl, factor=2.0)
    ds = xr.DataArray(np.arange(3.0), dims="x", name="dummy")
    with pytest.raises(ResultError, match="not computed from federated data"):
        fed.publish_result("plain", ds)
    ref = fed.publish_result("scaled-chl", scaled, site="awi")
    prov = fed.provenance(ref)
    assert [m["method"] for m in prov["methods"]] == ["awi/scale"]
    assert [d["dataset"] for d in prov["datasets"]] == ["geomar/chl"]


def test_results_and_methods_survive_a_hub_restart(tmp_path):
    """Sites reconnect by themselves and re-announce catalog, methods and results."""
    lf = LocalFederation(tmp_path / "logs", dashboard=False)
    lf.start_hub()
    try:
        cfg = make_site(tmp_path, "awi", "sst", "sst.zarr", tools=AWI_TOOLS, **AWI_METHODS)
        lf.start_site(cfg)
        with lf.connect() as fed:
            sst = fed.open_dataset("awi/sst").sst
            ref = fed.publish_result("area-mean", sst.mean(["lat", "lon"]))
            expected = fed.open_dataset(ref).sst.compute()
        lf.stop("hub")
        lf.start_hub()  # same address, empty state
        with lf.connect() as fed:
            wait(lambda: fed.sites().get("awi", {}).get("workers")
                 and ref in set(fed.catalog()["dataset"]), 60, "awi and its result back")
            assert ref in set(fed.catalog()["dataset"])
            assert fed.provenance(ref)["datasets"][0]["dataset"] == "awi/sst"
            xr.testing.assert_identical(fed.open_dataset(ref).sst.compute(), expected)
            assert fed.call("awi/echo", 5).result(timeout=30) == 5
        assert "reconnected" in lf.log("awi")
    finally:
        lf.close()
