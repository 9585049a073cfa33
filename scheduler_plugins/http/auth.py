"""Access tokens of the hub's HTTP port: which exist, which a request carries, who it is.

Tokens come from dask config (none configured means the port is open)::

    federation:
      http:
        tokens: ["s3cret", ...]            # or DASK_FEDERATION__HTTP__TOKENS='["s3cret"]'
        tokens-file: /etc/federation/tokens # one token per line, '#' comments; re-read on change

``tokens`` may also map token -> user name (file lines ``TOKEN USER``): the user is who
the caller is for ``federation.grants`` (a token without one is anonymous).

The API (:func:`api_caller`) takes only ``Authorization: Bearer <token>`` and answers
401/403 as JSON; pages (:mod:`.guard`) also take HTTP Basic, a cookie or ``?token=``
(:func:`presented_token`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from tornado import httputil

from .common import setting
from .errors import ApiError

logger = logging.getLogger(__name__)

#: The cookie a browser keeps the token in (see :mod:`.guard`).
COOKIE = "federation-token"


class Tokens:
    """Tokens from ``federation.http.tokens`` and ``federation.http.tokens-file``."""

    def __init__(self) -> None:
        #: (path, mtime, tokens) of the file as last read
        self._file: tuple[str, float, dict[str, str | None]] | None = None

    def _from_file(self, path: str) -> dict[str, str | None]:
        path = os.path.expanduser(str(path))
        try:
            mtime = os.stat(path).st_mtime
            if self._file is None or self._file[:2] != (path, mtime):
                tokens: dict[str, str | None] = {}
                for line in Path(path).read_text().splitlines():
                    fields = line.split("#", 1)[0].split()
                    if fields:
                        tokens[fields[0]] = fields[1] if len(fields) > 1 else None
                self._file = (path, mtime, tokens)
        except OSError as e:
            logger.error("Cannot read federation.http.tokens-file %s: %s", path, e)
            return {}  # configured but unreadable: nobody gets in
        return self._file[2]

    def get(self) -> dict[str, str | None] | None:
        """Valid token -> user name, or ``None`` if no tokens are configured (open port)."""
        listed = setting("tokens")
        path = setting("tokens-file")
        if not listed and not path:
            return None
        if isinstance(listed, str):
            listed = listed.replace(",", " ").split()
        if isinstance(listed, dict):
            tokens = {str(t): (str(u) if u else None) for t, u in listed.items() if t}
        else:
            tokens = {str(t): None for t in listed or () if str(t)}
        if path:
            tokens.update(self._from_file(path))
        return tokens


@dataclass(frozen=True)
class Caller:
    """Who makes an API request: ``user`` for grants, ``owner`` of the jobs it starts
    (a hash of its token; ``None`` on an open hub, where jobs are everyone's)."""

    user: str | None = None
    owner: str | None = None


def valid(token: str | None, tokens: dict[str, str | None]) -> bool:
    """Whether ``token`` is one of ``tokens``."""
    return lookup(token, tokens) is not None


def lookup(token: str | None, tokens: dict[str, str | None]) -> Caller | None:
    """The caller holding ``token``, or ``None`` if it is not one of ``tokens``
    (compared in constant time per candidate)."""
    if not token:
        return None
    for known, user in tokens.items():
        if hmac.compare_digest(token.encode(), known.encode()):
            return Caller(user=user, owner=hashlib.sha256(token.encode()).hexdigest()[:16])
    return None


def presented_token(request: httputil.HTTPServerRequest) -> str | None:
    """The token a page request carries: Bearer, Basic password, ``?token=`` or cookie."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return password or user
    query = request.query_arguments.get("token")
    if query:
        return query[-1].decode(errors="replace")
    cookie = request.cookies.get(COOKIE)
    return cookie.value if cookie is not None else None


def api_caller(request: httputil.HTTPServerRequest, tokens: dict[str, str | None] | None
               ) -> Caller:
    """The caller of an API request with ``Authorization: Bearer <token>``.

    Raises :class:`ApiError` 401 ``unauthorized`` without a bearer token and 403
    ``forbidden`` with one that is not in ``tokens`` (``None``: open hub, anyone).
    """
    if tokens is None:
        return Caller()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401, "unauthorized",
            "this hub requires an access token: send 'Authorization: Bearer <token>'",
        )
    caller = lookup(token, tokens)
    if caller is None:
        raise ApiError(403, "forbidden", "the access token is not valid for this hub")
    return caller
