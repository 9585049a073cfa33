"""A minimal HTTP client for the hub's HTTP API tests (urllib: errors are answers too)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from email.message import Message

#: the HTTP API's base path on the hub's HTTP port
API = "/federation/api/v1"


def request(
    base: str, method: str, path: str, body: object = None, token: str | None = None,
    raw: bytes | None = None, headers: dict | None = None,
) -> tuple[int, Message, object]:
    """(status, headers, parsed JSON or text) of one request; errors are answers too."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, hdrs, text = r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        status, hdrs, text = e.code, e.headers, e.read().decode()
    try:
        return status, hdrs, json.loads(text)
    except ValueError:
        return status, hdrs, text
