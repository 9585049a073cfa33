"""Limits on what a site announces: how many datasets, results and methods, how large.

One site announcing 100 000 datasets or a 50 MB attrs blob would make every catalog
request of every user slow; the hub refuses such an announcement with a message naming
the limit and the setting (the site process stops with it, as with any refused
registration).

Settings (hub's dask config): ``federation.announce.max-datasets`` (datasets and stored
results of one site, 1000), ``max-methods`` (1000), ``max-metadata-bytes`` (metadata of
one dataset, method or result — attrs, docstrings, schemas — as JSON, 1 MiB).
"""

from __future__ import annotations

import json

import dask
from dask.utils import format_bytes, parse_bytes

from federation.errors import FederationError


class AnnouncementTooLarge(FederationError, ValueError):
    """A site announced more, or larger metadata, than the hub accepts (the site process
    stops with this message)."""


def limit(key: str) -> int:
    """``federation.announce.<key>`` as an integer (byte sizes parsed)."""
    value = dask.config.get(f"federation.announce.{key}")
    return parse_bytes(value) if isinstance(value, str) else int(value)


def check_announcement(
    site: str, datasets: list[dict], methods: list[dict], results: list[dict]
) -> None:
    """Raise :class:`AnnouncementTooLarge` unless a registration is within the limits.

    ``datasets``/``methods``/``results`` are the wire dicts of the registration, checked
    before anything is decoded.
    """
    entries = len(datasets) + len(results)
    if entries > limit("max-datasets"):
        raise AnnouncementTooLarge(
            f"site {site!r} announced {len(datasets)} datasets and {len(results)} results; "
            f"this hub accepts at most {limit('max-datasets')} per site "
            "(federation.announce.max-datasets in the hub's config)"
        )
    if len(methods) > limit("max-methods"):
        raise AnnouncementTooLarge(
            f"site {site!r} announced {len(methods)} methods; this hub accepts at most "
            f"{limit('max-methods')} (federation.announce.max-methods)"
        )
    most = limit("max-metadata-bytes")
    for kind, items in (("dataset", datasets), ("method", methods), ("result", results)):
        for item in items:
            size = len(json.dumps(item, default=str))
            if size > most:
                name = (item.get("info", item) if isinstance(item, dict) else {}).get("name", "?")
                raise AnnouncementTooLarge(
                    f"site {site!r} announced {kind} {str(name)[:80]!r} with "
                    f"{format_bytes(size)} of metadata (attrs, docstrings, schemas); this hub "
                    f"accepts at most {format_bytes(most)} per entry "
                    "(federation.announce.max-metadata-bytes); trim its attrs"
                )
