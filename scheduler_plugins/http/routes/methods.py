"""``GET methods``, ``GET methods/{site}/{name}`` and calling a method with ``POST``.

``POST methods/{site}/{name}?wait=5`` validates the arguments against the method's
schema (400 naming the parameter, with the schema), submits the call (:mod:`..jobs`)
and answers ``200`` with the finished job and its ``result`` if it finishes within
``wait`` seconds (default 5, at most 60; ``0`` or ``Prefer: respond-async`` never waits)
and its JSON is small (``federation.http.inline-bytes``); otherwise ``202`` with the
job's ``id`` and ``Location``, to poll with ``GET jobs/{id}``.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from federation.methods import MethodInfo, validate_arguments

from .. import records
from ..arguments import decode_argument, parse_body
from ..base import BaseHandler
from ..common import setting
from ..errors import ApiError, domain_error
from ..spec import Operation, Route

#: the longest a call waits for its result before answering 202 (s)
MAX_WAIT = 60.0


def method_json(info: MethodInfo) -> dict[str, Any]:
    """A method's description plus the JSON schema of its keyword arguments."""
    d = info.to_wire()
    properties: dict[str, Any] = {}
    required = []
    extra = False
    for p in d["parameters"]:
        if p["kind"] == "VAR_KEYWORD":
            extra = True
            continue
        if p["kind"] in ("VAR_POSITIONAL", "POSITIONAL_ONLY"):
            continue
        schema = dict(p["schema"] or {})
        if p.get("annotation") and "title" not in schema:
            schema["title"] = p["name"]
        if p.get("has_default"):
            schema.setdefault("default", p["default"])
        else:
            required.append(p["name"])
        properties[p["name"]] = schema
    d["ref"] = info.ref
    d["schema"] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": info.ref,
        "description": d.get("summary", ""),
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": extra,
    }
    return d


def wait_seconds(wait: str, prefer: str) -> float:
    """How long a call waits for its result: ``?wait=`` (at most :data:`MAX_WAIT`), 0 with
    ``Prefer: respond-async``; 400 ``bad_request`` if it is no number of seconds >= 0."""
    try:
        seconds = float(wait)
        if not 0 <= seconds < math.inf:
            raise ValueError
    except ValueError:
        raise ApiError(
            400, "bad_request",
            f"wait={wait!r} is not a number of seconds >= 0 (at most 60 are used)",
        ) from None
    return 0.0 if "respond-async" in prefer else min(seconds, MAX_WAIT)


class MethodsHandler(BaseHandler):
    operations = {"get": Operation(
        "Shared methods and workflows", {200: (records.MethodList, "the methods")},
    )}

    def get(self) -> None:
        methods = [
            method_json(m) for ref, m in sorted(self.state.methods().items()) if self.granted(ref)
        ]
        for m in methods:
            m.pop("schema", None)
        self.send_json({"methods": methods})


class MethodHandler(BaseHandler):
    operations = {
        "get": Operation(
            "One method: signature, docstring, JSON schema of its arguments",
            {200: (records.Method, "the method")}, errors=(401, 403, 404),
        ),
        "post": Operation(
            "Call a method at its site",
            {200: (records.Job, "finished, with `result`"),
             202: (records.Job, "still running: poll `href`"),
             500: (records.Error, "the method failed at its site")},
            errors=(400, 401, 403, 404, 413),
            description="Answers 200 with the finished job (and its result) if it finishes "
            "within `wait` seconds and its JSON is small, else 202 with the job to poll at "
            "`Location`.",
            query=records.CallQuery, body=records.CallArguments,
            headers=({"name": "Prefer", "in": "header", "schema": {"const": "respond-async"}},),
        ),
    }

    def get(self, site: str, name: str) -> None:
        info = self.state.method(f"{site}/{name}")
        self.check_grant(info.ref)
        self.send_json(method_json(info))

    def _arguments(self, info: MethodInfo, described: dict[str, Any]) -> dict[str, Any]:
        """The body's arguments, decoded and validated; errors carry the schema."""
        kwargs = parse_body(self.request.body)
        for value in kwargs.values():
            if isinstance(value, dict) and isinstance(value.get("dataset"), str):
                self.check_grant(self.state.dataset(value["dataset"]).ref)
        params = {p["name"]: p for p in described["parameters"]}
        try:
            kwargs = {
                k: decode_argument(self.state, params[k], v) if k in params else v
                for k, v in kwargs.items()
            }
            return validate_arguments(info, kwargs)
        except ApiError as e:
            e.extra.setdefault("schema", described["schema"])
            raise
        except Exception as e:
            api = domain_error(e)
            if api is None:
                raise
            api.extra["schema"] = described["schema"]
            raise api from None

    async def post(self, site: str, name: str) -> None:
        info = self.state.method(f"{site}/{name}")
        self.check_grant(info.ref)
        described = method_json(info)
        kwargs = self._arguments(info, described)
        wait = wait_seconds(self.get_query_argument("wait", "5"),
                            self.request.headers.get("Prefer", ""))
        runner = self.api.runner
        runner.prune()
        job = await runner.submit(info.ref, kwargs, self.owner)
        if wait > 0:
            try:
                await asyncio.wait_for(job.event.wait(), wait)
            except asyncio.TimeoutError:
                pass
        if job.status == "finished" and len(job.result or "") <= int(setting("inline-bytes")):
            self.send_json(job.to_json(self.api.prefix))
        elif job.status == "error":
            err = job.error or {}
            status = 400 if err.get("code") == "bad_arguments" else 500
            body = {"status": status, **err, "job": json.loads(job.to_json(self.api.prefix))}
            self.send_json({"error": body}, status)
        else:
            self.set_header("Location", f"{self.base}/jobs/{job.id}")
            self.send_json(job.to_json(self.api.prefix, result=False), 202)


routes: list[Route] = [
    Route("/methods", MethodsHandler),
    Route("/methods/{site}/{name}", MethodHandler),
]
