"""The OpenAPI 3.1 document of the hub's HTTP API, generated from the code.

Paths come from the route modules (:data:`.routes.ROUTES`, each handler's
``operations``); schemas from :mod:`.records` (pydantic's JSON Schema generation, in
``components/schemas``). Only the security scheme and the error responses are written
here.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from federation.protocol import API_PATH

from . import records
from .spec import Operation, Route

REF = "#/components/schemas/{model}"
#: error statuses -> the name of the shared response and its description
ERRORS = {
    400: ("BadRequest", "bad arguments or request"),
    401: ("Unauthorized", "no token given"),
    403: ("Forbidden", "the token is not valid, or no grant"),
    404: ("NotFound", "unknown name"),
    413: ("TooLarge", "the request body is larger than federation.http.max-body-bytes"),
}
#: records documented although no operation answers them whole (the ``result`` of a job)
EXTRA_RECORDS: tuple[type[BaseModel], ...] = (records.ArrayJSON, records.Variable)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _query(model: type[BaseModel]) -> list[dict[str, Any]]:
    """A record's fields as OpenAPI query parameters (all optional)."""
    schema = model.model_json_schema(ref_template=REF)
    out = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        description = prop.pop("description", None)
        prop.pop("title", None)
        param = {"name": name, "in": "query", "schema": prop}
        if description:
            param["description"] = description
        out.append(param)
    return out


def _operation(route: Route, op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": op.summary}
    if op.description:
        out["description"] = op.description
    params = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
        for p in route.parameters
    ]
    params += _query(op.query) if op.query else []
    params += list(op.headers)
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {"required": False, "content": {"application/json": {
            "schema": _ref(op.body)}}}
    responses: dict[str, Any] = {
        str(status): _json(model, description)
        for status, (model, description) in op.responses.items()
    }
    for status in op.errors:
        responses[str(status)] = {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
    out["responses"] = dict(sorted(responses.items()))
    return out


def _models() -> list[type[BaseModel]]:
    from .routes import ROUTES

    models: dict[str, type[BaseModel]] = {"Error": records.Error}
    for route in ROUTES:
        for op in getattr(route.handler, "operations", {}).values():
            for model in [*(m for m, _ in op.responses.values()), op.body]:
                if model is not None:
                    models[model.__name__] = model
    for model in EXTRA_RECORDS:
        models[model.__name__] = model
    return list(models.values())


@functools.cache
def _schemas() -> dict[str, Any]:
    """``components/schemas``: every record an operation uses, and what they refer to."""
    models = _models()
    _, top = models_json_schema([(m, "serialization") for m in models], ref_template=REF)
    return dict(sorted(top["$defs"].items()))


def openapi_document(prefix: str = "") -> dict[str, Any]:
    """The OpenAPI document; paths are relative to the server URL ``<prefix>/federation/api/v1``."""
    from .routes import ROUTES

    paths: dict[str, Any] = {}
    for route in ROUTES:
        operations = getattr(route.handler, "operations", {})
        if route.hidden or not operations:
            continue
        paths[route.path] = {m: _operation(route, op) for m, op in operations.items()}
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
            "schemas": _schemas(),
            "responses": {
                name: _json(records.Error, description) for name, description in ERRORS.values()
            },
        },
    }
