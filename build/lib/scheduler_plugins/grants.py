"""Grants: which identities may use which datasets, methods and results."""

from __future__ import annotations

import fnmatch

import dask


def principal(ident: tuple[str, str] | None) -> str | None:
    """The grants key of an identity: a user's name, or ``site:<name>``."""
    if ident is None:
        return None
    role, name = ident
    return name if role == "user" else f"{role}:{name}"


class Grants:
    """``federation.grants`` from dask config; ``None`` means an open federation."""

    def __init__(self, grants: dict[str, list[str]] | None):
        self.grants = grants

    @classmethod
    def from_config(cls) -> Grants:
        return cls(dask.config.get("federation.grants", None))

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

    def allows(self, who: str | None, ref: str) -> bool:
        if self.grants is None or (who or "").startswith("hub:"):
            return True
        return any(fnmatch.fnmatchcase(ref, p) for p in self.patterns(who))
