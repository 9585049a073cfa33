"""Errors the API answers as JSON, and which domain errors are answers, not faults."""

from __future__ import annotations

from typing import Any

from tornado import web

from federation.errors import ArgumentError, UnknownDatasetError, UnknownMethodError


class ApiError(web.HTTPError):
    """An error answered as JSON: ``{"error": {"status", "code", "message", ...}}``.

    ``extra`` entries (e.g. ``schema`` for ``bad_arguments``) are added to the object.
    """

    def __init__(self, status: int, code: str, message: str, **extra: Any):
        super().__init__(status, reason=None)
        self.code = code
        self.message = message
        self.extra = extra


def domain_error(e: BaseException) -> ApiError | None:
    """The API's answer to ``e`` (unknown names: 404, bad arguments: 400), or ``None`` if
    ``e`` is a fault of the hub or of a method."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, (UnknownDatasetError, UnknownMethodError)):
        return ApiError(404, "not_found", str(e))
    if isinstance(e, ArgumentError):
        return ApiError(400, "bad_arguments", str(e))
    return None
