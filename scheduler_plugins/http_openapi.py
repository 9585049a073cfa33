"""The OpenAPI 3.1 description of the hub's HTTP API (:mod:`.http_api`)."""

from __future__ import annotations

from typing import Any

API_PATH = "federation/api/v1"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "403": {"$ref": "#/components/responses/Forbidden"},
}
NOT_FOUND = {"404": {"$ref": "#/components/responses/NotFound"}}

SITE_NAME = [
    {"name": "site", "in": "path", "required": True, "schema": {"type": "string"}},
    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
]

VARIABLE = {
    "type": "object",
    "description": "one variable or coordinate in JSON form",
    "properties": {
        "dims": {"type": "array", "items": {"type": "string"}},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "dtype": {"type": "string"},
        "data": {"description": "nested lists in C order; NaN as null, dates ISO 8601"},
        "attrs": {"type": "object"},
    },
    "required": ["dims", "shape", "dtype", "data"],
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "status": {"type": "integer"},
                    "code": {
                        "type": "string",
                        "examples": ["not_found", "bad_arguments", "unauthorized", "forbidden",
                                     "bad_json", "method_failed", "no_methods_support"],
                    },
                    "message": {"type": "string"},
                    "schema": {"description": "for bad_arguments: the arguments' JSON schema"},
                },
                "required": ["status", "code", "message"],
            }
        },
        "required": ["error"],
    },
    "Site": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "status": {"enum": ["connected", "no workers", "offline"]},
            "workers": {"type": "array", "items": {"type": "string"}},
            "nthreads": {"type": "integer"},
            "memory_limit": {"type": "integer", "description": "bytes, all workers"},
            "memory_used": {"type": "integer", "description": "bytes, all workers"},
            "datasets": {"type": "array", "items": {"type": "string"}},
            "methods": {"type": "array", "items": {"type": "string"}},
            "tasks_done": {"type": "integer"},
            "connectivity": {"enum": ["direct", "outbound-only"]},
            "relayed_bytes": {
                "type": "integer", "description": "bytes the hub's relay carried to/from it",
            },
            "jobs": {
                "type": ["object", "null"],
                "description": "workers as batch jobs (null: the site runs them itself)",
                "properties": {
                    "type": {"enum": ["slurm", "pbs", "lsf", "sge", "kubernetes"]},
                    **{k: {"type": "integer"} for k in (
                        "requested", "pending", "running", "failed", "ended", "minimum",
                        "maximum")},
                    "adaptive": {"type": "boolean"},
                    "halted": {"type": "boolean", "description": "stopped submitting jobs "
                               "after failed starts"},
                    "pending_reason": {"type": ["string", "null"]},
                    "error": {"type": ["string", "null"], "description": "last failure"},
                },
            },
        },
    },
    "CatalogRow": {
        "type": "object",
        "properties": {
            "dataset": {"type": "string", "description": "site/name"},
            "site": {"type": "string"},
            "kind": {"enum": ["dataset", "result"]},
            "variables": {"type": "array", "items": {"type": "string"}},
            "dims": {"type": "object", "additionalProperties": {"type": "integer"}},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "dtype": {"type": "string", "description": "first data variable's dtype"},
            "dtypes": {"type": "object", "additionalProperties": {"type": "string"},
                       "description": "variable -> dtype as xarray shows it at the site"},
            "calendars": {"type": "object", "additionalProperties": {"type": "string"},
                          "description": "date variable -> calendar (noleap, 360_day ...)"},
            "nbytes": {"type": "integer"},
            "chunks": {"type": "object", "additionalProperties": {"type": "integer"}},
            "description": {"type": "string"},
            "version": {"type": "string", "description": "changes when data or metadata do"},
            "changed": {"type": ["number", "null"],
                        "description": "Unix time the site noticed this version"},
        },
    },
    "Dataset": {
        "type": "object",
        "properties": {
            "dataset": {"type": "string"},
            "site": {"type": "string"},
            "name": {"type": "string"},
            "kind": {"enum": ["dataset", "result"]},
            "description": {"type": "string"},
            "version": {"type": "string"},
            "dims": {"type": "object", "additionalProperties": {"type": "integer"}},
            "nbytes": {"type": "integer"},
            "data_vars": {"type": "array", "items": {"type": "string"}},
            "attrs": {"type": "object"},
            "variables": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "dims": {"type": "array", "items": {"type": "string"}},
                        "shape": {"type": "array", "items": {"type": "integer"}},
                        "dtype": {"type": "string"},
                        "calendar": {"type": ["string", "null"]},
                        "chunks": {"type": "array", "items": {"type": "integer"}},
                        "nbytes": {"type": "integer"},
                        "attrs": {"type": "object"},
                        "encoding": {"type": "object"},
                        "is_coord": {"type": "boolean"},
                        "values": {"description": "coordinate values, when they travel"},
                    },
                },
            },
            "provenance": {"type": "object", "description": "results only"},
        },
    },
    "Method": {
        "type": "object",
        "properties": {
            "ref": {"type": "string", "description": "site/name"},
            "site": {"type": "string"},
            "name": {"type": "string"},
            "kind": {"enum": ["method", "workflow"]},
            "signature": {"type": "string"},
            "summary": {"type": "string"},
            "doc": {"type": "string"},
            "parameters": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "kind": {"type": "string"},
                        "annotation": {"type": "string"},
                        "schema": {"type": "object"},
                        "has_default": {"type": "boolean"},
                        "default": {},
                    },
                },
            },
            "returns": {"type": "object", "description": "JSON schema of the result"},
            "schema": {
                "type": "object",
                "description": "JSON schema (2020-12) of the call's JSON object of arguments "
                "(GET methods/{site}/{name} only). Parameters with "
                "'x-federation-type' (xarray.Dataset, xarray.DataArray, numpy.ndarray) take "
                "{\"dataset\": \"site/name\", \"variable\": \"...\"} or an ArrayJSON value.",
            },
        },
    },
    "Job": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "method": {"type": "string"},
            "status": {"enum": ["pending", "running", "finished", "error", "cancelled"]},
            "progress": {
                "type": "object",
                "properties": {
                    "done": {"type": "integer"},
                    "total": {"type": "integer"},
                    "fraction": {"type": "number"},
                },
            },
            "submitted": {"type": "number", "description": "UNIX time"},
            "finished": {"type": ["number", "null"]},
            "href": {"type": "string"},
            "result": {"description": "when finished: the result in JSON form (ArrayJSON etc.)"},
            "error": {"type": "object", "properties": {
                "code": {"type": "string"}, "type": {"type": "string"},
                "message": {"type": "string"}}},
        },
        "required": ["id", "method", "status", "progress"],
    },
    "Traffic": {
        "type": "object",
        "properties": {
            "columns": {"const": ["source", "destination", "bytes", "nbytes", "transfers"]},
            "rows": {"type": "array", "items": {
                "type": "array", "prefixItems": [
                    {"type": "string"}, {"type": "string"}, {"type": "integer"},
                    {"type": "integer"}, {"type": "integer"}]}},
            "total": {"type": "integer", "description": "bytes on the wire, all rows"},
            "tasks": {"type": "object", "additionalProperties": {"type": "integer"}},
            "window": {"type": ["number", "null"]},
            "since": {"type": ["number", "null"]},
            "time": {"type": "number"},
        },
    },
    "ArrayJSON": {
        "description": "Arrays and tables in JSON",
        "oneOf": [
            {"type": "object", "properties": {
                "type": {"const": "ndarray"}, "dtype": {"type": "string"},
                "shape": {"type": "array", "items": {"type": "integer"}}, "data": {}}},
            {"type": "object", "properties": {
                "type": {"const": "DataArray"}, "name": {"type": ["string", "null"]},
                "dims": {"type": "array"}, "shape": {"type": "array"}, "dtype": {"type": "string"},
                "data": {}, "attrs": {"type": "object"},
                "coords": {"type": "object", "additionalProperties": VARIABLE}}},
            {"type": "object", "properties": {
                "type": {"const": "Dataset"}, "dims": {"type": "object"},
                "data_vars": {"type": "object", "additionalProperties": VARIABLE},
                "coords": {"type": "object", "additionalProperties": VARIABLE},
                "attrs": {"type": "object"}}},
            {"type": "object", "properties": {
                "type": {"const": "DataFrame"}, "columns": {"type": "array"},
                "index": {"type": "array"}, "data": {"type": "array"}}},
            {"type": "object", "properties": {
                "type": {"const": "Series"}, "name": {}, "index": {"type": "array"},
                "data": {"type": "array"}}},
        ],
    },
}


def openapi_document(prefix: str = "") -> dict[str, Any]:
    """The OpenAPI document; paths are relative to the server URL ``<prefix>/federation/api/v1``."""
    paths = {
        "/sites": {"get": {
            "summary": "Sites with status and resources",
            "responses": {"200": _json({"type": "object", "properties": {
                "sites": {"type": "array", "items": _ref("Site")}}}, "the sites"), **ERRORS},
        }},
        "/catalog": {"get": {
            "summary": "Datasets and published results",
            "responses": {"200": _json({"type": "object", "properties": {
                "datasets": {"type": "array", "items": _ref("CatalogRow")}}}, "the catalog"),
                **ERRORS},
        }},
        "/datasets/{site}/{name}": {"get": {
            "summary": "Metadata of one dataset",
            "parameters": SITE_NAME,
            "responses": {"200": _json(_ref("Dataset"), "the dataset"), **ERRORS, **NOT_FOUND},
        }},
        "/methods": {"get": {
            "summary": "Shared methods and workflows",
            "responses": {"200": _json({"type": "object", "properties": {
                "methods": {"type": "array", "items": _ref("Method")}}}, "the methods"),
                **ERRORS},
        }},
        "/methods/{site}/{name}": {
            "get": {
                "summary": "One method: signature, docstring, JSON schema of its arguments",
                "parameters": SITE_NAME,
                "responses": {"200": _json(_ref("Method"), "the method"), **ERRORS, **NOT_FOUND},
            },
            "post": {
                "summary": "Call a method at its site",
                "description": "Answers 200 with the finished job (and its result) if it "
                "finishes within `wait` seconds and its JSON is small, else 202 with the job "
                "to poll at `Location`.",
                "parameters": [
                    *SITE_NAME,
                    {"name": "wait", "in": "query", "schema": {
                        "type": "number", "minimum": 0, "maximum": 60, "default": 5}},
                    {"name": "Prefer", "in": "header", "schema": {"const": "respond-async"}},
                ],
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": {"type": "object", "description": "arguments by name; see the "
                               "method's `schema`"}}}},
                "responses": {
                    "200": _json(_ref("Job"), "finished, with `result`"),
                    "202": _json(_ref("Job"), "still running: poll `href`"),
                    "400": {"$ref": "#/components/responses/BadRequest"},
                    **ERRORS, **NOT_FOUND,
                    "500": _json(_ref("Error"), "the method failed at its site"),
                },
            },
        },
        "/jobs/{id}": {
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "get": {
                "summary": "Status, progress and (when finished) result of a call",
                "responses": {"200": _json(_ref("Job"), "the job"), **ERRORS, **NOT_FOUND},
            },
            "delete": {
                "summary": "Cancel a call",
                "responses": {"200": _json(_ref("Job"), "the job"), **ERRORS, **NOT_FOUND},
            },
        },
        "/traffic": {"get": {
            "summary": "Bytes that crossed site borders (source × destination)",
            "parameters": [{"name": "window", "in": "query", "description":
                            "only the last N seconds (from the hub's 2 s history, ≤ 10 min)",
                            "schema": {"type": "number", "exclusiveMinimum": 0}}],
            "responses": {"200": _json(_ref("Traffic"), "the ledger"),
                          "400": {"$ref": "#/components/responses/BadRequest"}, **ERRORS},
        }},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dask-federation hub API",
            "version": "1",
            "description": "Sites, catalog, shared methods and traffic of a dask-federation "
            "hub. A JavaScript client is served at ../../client.js.",
        },
        "servers": [{"url": f"{prefix}/{API_PATH}"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "needed when the hub has tokens (federation.http.tokens)",
            }},
            "schemas": SCHEMAS,
            "responses": {
                "BadRequest": _json(_ref("Error"), "bad arguments or request"),
                "Unauthorized": _json(_ref("Error"), "no token given"),
                "Forbidden": _json(_ref("Error"), "the token is not valid"),
                "NotFound": _json(_ref("Error"), "unknown name"),
            },
        },
    }
