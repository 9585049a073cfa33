"""The HTTP API's written contract, in-process: the OpenAPI document generated from the
routes and the pydantic records, and the JSON the job runner, the codec and the argument
decoder produce and take, checked against it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from scheduler_plugins.http.arguments import decode_argument
from scheduler_plugins.http.base import BaseHandler
from scheduler_plugins.http.codec import to_jsonable
from scheduler_plugins.http.errors import ApiError
from scheduler_plugins.http.jobs import Job
from scheduler_plugins.http.openapi import openapi_document
from scheduler_plugins.http.routes import ROUTES

DOC = openapi_document("/dask")
REGISTRY = Registry().with_resource("urn:openapi", DRAFT202012.create_resource(DOC))


def errors(body: object, schema: str) -> list[str]:
    """Why ``body`` is not a valid ``#/components/schemas/<schema>`` (empty: it is)."""
    validator = Draft202012Validator(
        {"$ref": f"urn:openapi#/components/schemas/{schema}"}, registry=REGISTRY
    )
    return [e.message for e in validator.iter_errors(body)]


def test_document_is_valid_and_covers_every_route():
    validate_openapi(DOC)
    assert DOC["servers"] == [{"url": "/dask/federation/api/v1"}]
    for route in ROUTES:
        if route.hidden:
            continue
        implemented = {m for m in ("get", "post", "delete")
                       if getattr(route.handler, m) is not getattr(BaseHandler, m)}
        assert set(DOC["paths"][route.path]) == implemented, route.path
    call = DOC["paths"]["/methods/{site}/{name}"]["post"]
    assert {p["name"] for p in call["parameters"]} == {"site", "name", "wait", "Prefer"}
    assert set(call["responses"]) == {"200", "202", "400", "401", "403", "404", "413", "500"}


def test_url_patterns_of_the_routes():
    import re

    patterns = {r.path: re.compile(r.pattern("/api") + "$") for r in ROUTES}
    # a dataset's name may hold slashes (published results); a method's may not
    assert patterns["/datasets/{site}/{name}"].match("/api/datasets/awi/results/x").groups() \
        == ("awi", "results/x")
    assert not patterns["/methods/{site}/{name}"].match("/api/methods/awi/a/b")
    assert patterns["/openapi.json"].match("/api/openapi.json")
    assert not patterns["/openapi.json"].match("/api/openapiXjson")


def test_jobs_as_the_runner_writes_them_conform():
    job = Job(id="j1", method="awi/echo", owner=None, keys={"a", "b"}, done=1)
    assert not errors(json.loads(job.to_json("/dask")), "Job")
    job.status, job.finished, job.result = "finished", 2.0, json.dumps(to_jsonable([1.5, None]))
    body = json.loads(job.to_json("/dask"))
    assert body["result"] == [1.5, None] and body["href"] == "/dask/federation/api/v1/jobs/j1"
    assert not errors(body, "Job")
    job.status, job.error = "error", {"code": "method_failed", "type": "ValueError",
                                      "message": "boom"}
    assert not errors(json.loads(job.to_json("")), "Job")
    assert errors({**body, "status": "lost"}, "Job")  # the record is no rubber stamp


def test_arrays_in_json_conform_and_decode_back():
    time = pd.date_range("2020-01-01", periods=3)
    da = xr.DataArray([1.0, np.nan, 3.0], dims="time", coords={"time": time}, name="t",
                      attrs={"units": "K"})
    values = {
        "DataArray": da, "Dataset": da.to_dataset(), "ndarray": np.arange(6).reshape(2, 3),
        "DataFrame": pd.DataFrame({"a": [1, 2]}), "Series": pd.Series([1.0, 2.0], name="s"),
    }
    for tag, value in values.items():
        encoded = json.loads(json.dumps(to_jsonable(value)))
        assert encoded["type"] == tag and not errors(encoded, "ArrayJSON"), tag
    assert errors({"type": "DataArray", "dims": ["x"]}, "ArrayJSON")

    param = {"name": "data", "schema": {"x-federation-type": "xarray.DataArray"}}
    back = decode_argument(None, param, json.loads(json.dumps(to_jsonable(da))))
    xr.testing.assert_identical(back, da)
    with pytest.raises(ApiError) as bad:
        decode_argument(None, param, {"type": "DataArray", "dims": ["x"], "data": [[1]]})
    assert bad.value.status_code == 400
    assert "parameter 'data': not a valid xarray.DataArray in JSON form" in bad.value.message
    with pytest.raises(ApiError) as bad:
        decode_argument(None, param, {"type": "table"})
    assert "not type 'table'" in bad.value.message
