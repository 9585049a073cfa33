"""Grants: which identities may use which datasets, methods and results."""

from __future__ import annotations

import fnmatch
from typing import Any

import dask

from federation.protocol import site_of_ref


def principal(ident: tuple[str, str] | None) -> str | None:
    """The grants key of an identity: a user's name, or ``site:<name>`` (``hub:<name>``).

    A user certificate whose name has a ``:`` (``hub:x``, ``site:awi``) is keyed
    ``user:<name>``: it must not pass for the hub (whom grants never refuse) or a site
    (which may replace its results and place work there).
    """
    if ident is None:
        return None
    role, name = ident
    if role == "user":
        return name if ":" not in name else f"user:{name}"
    return f"{role}:{name}"


class Grants:
    """``federation.grants`` from dask config; ``None`` means an open federation."""

    def __init__(self, grants: dict[str, list[str]] | None):
        self.grants = grants

    @classmethod
    def from_config(cls) -> Grants:
        return cls(dask.config.get("federation.grants"))

    @property
    def enabled(self) -> bool:
        return self.grants is not None

    def patterns(self, who: str | None) -> list[str]:
        assert self.grants is not None
        return [*self.grants.get(who or "", []), *self.grants.get("*", [])]

    @staticmethod
    def refusal(who: str | None, refs: list[str]) -> str:
        """The message for ``who`` lacking grants for ``refs``."""
        return (
            f"{'user ' + repr(who) if who else 'an anonymous client'} has no grant for "
            f"{', '.join(map(repr, refs))}; ask the hub operator to add it to federation.grants"
        )

    def allows_site(self, who: str | None, site: str) -> bool:
        """Whether ``who`` holds some grant at ``site`` (a pattern whose site part
        matches it): the condition for placing work there."""
        if self.grants is None or (who or "").startswith("hub:") or who == f"site:{site}":
            return True
        return any(
            fnmatch.fnmatchcase(site, site_of_ref(p)) for p in self.patterns(who)
        )

    def site_view(self, who: str | None, site: str, info: dict[str, Any]) -> dict[str, Any]:
        """A site's entry of ``fed.sites()`` with only the datasets, methods and results
        ``who`` may use."""
        return {**info, **{
            part: [n for n in info.get(part, ()) if self.allows(who, f"{site}/{n}")]
            for part in ("datasets", "methods", "results")
        }}

    def allows(self, who: str | None, ref: str) -> bool:
        if self.grants is None or (who or "").startswith("hub:"):
            return True
        return any(fnmatch.fnmatchcase(ref, p) for p in self.patterns(who))
