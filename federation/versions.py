"""Versions of a site's datasets while providers keep changing them.

A dataset's **identity** is what the file system says about its files, cheaply, without
opening them: ``(name, inode, size, mtime_ns)`` of each file of a file or glob, of the
metadata files of a zarr store (appending chunks rewrites them), and the snapshot id of
an Icechunk branch or tag. Its digest changes whenever a provider appends, replaces
(``os.replace``: a new inode) or rewrites a file; touching a file changes it too.

The **version log** records, per dataset, each identity the site has described: its
catalog version, the version it followed and how it differs from it::

    append   the dataset grew along one dimension; everything else (variables, dtypes,
             attributes, the other dimensions, the old index values, the old files of a
             glob) is unchanged, so reads of the old extent stay valid
    replace  anything else (new values, new variables, a shorter extent, a new file)

The site process and its workers share the log, a JSON file in the site's
``local_directory`` (the system's temporary directory by default), written atomically
under a file lock. Whoever first meets a new identity — the site's periodic scan or a
worker's read — describes the dataset and records it, so a read never waits for the
scan. A read pinned to version P may use the current version V when every step from
P to V is an ``append`` (see :meth:`VersionLog.compatible`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from .catalog import DatasetInfo
from .errors import DatasetChanged
from .sources import Source, identity, is_url

T = TypeVar("T")

#: versions kept per dataset in the log; older ones cannot be pinned any more
KEEP = 200


def digest(ident: list[list[Any]]) -> str:
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]


#: how long a site or worker keeps retrying a dataset whose files change while it is
#: described or read (a provider writing them), before failing with a clear error
SETTLE_SECONDS = 10.0
#: how long it retries an error on files that do not change (a writer pausing mid-file)
#: before raising the error itself
ERROR_GRACE_SECONDS = 1.0


def settled(attempt: Callable[[], T], source: Source, what: str) -> tuple[list[list[Any]], T]:
    """Run ``attempt`` (a description or a read of ``source``) until the files' identity
    is the same before and after it, so it never mixes two versions; retry while a
    provider writes (also when ``attempt`` fails on a half-written file).

    Returns the identity and ``attempt``'s result.

    Raises
    ------
    DatasetChanged
        If the files kept changing for :data:`SETTLE_SECONDS`, naming ``what``.
    Exception
        What ``attempt`` raised, if it kept failing on unchanging files for
        :data:`ERROR_GRACE_SECONDS`.
    """
    start = time.monotonic()
    delay = 0.05
    while True:
        before = identity(source)
        try:
            result, error = attempt(), None
        except (OSError, ValueError, RuntimeError, KeyError) as e:  # a half-written file?
            result, error = None, e
        changed = identity(source) != before
        if not changed and error is None:
            return before, result
        waited = time.monotonic() - start
        if error is not None and not changed and waited > ERROR_GRACE_SECONDS:
            raise error
        if waited > SETTLE_SECONDS:
            why = f"{type(error).__name__}: {error}" if error else "its files kept changing"
            raise DatasetChanged(
                f"{what}: the files changed during every attempt for {SETTLE_SECONDS:g} s "
                f"({why}); a provider is writing them; retry when the write is done"
            ) from error
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _shape(info: DatasetInfo) -> dict[str, Any]:
    """What :func:`classify` compares: variables, dims, and hashes of the index values."""
    index = {}
    for name, var in info.stored.items():
        if var.values is not None and var.dims == (name,):
            values = np.ascontiguousarray(var.values)
            index[name] = hashlib.sha256(values.tobytes()).hexdigest()[:16]
    return {
        "dims": info.dims,
        "variables": {n: [list(v.dims), v.dtype] for n, v in info.variables.items()},
        "index": index,
        "attrs": hashlib.sha256(
            json.dumps(info.to_wire()["attrs"], default=repr, sort_keys=True).encode()
        ).hexdigest()[:16],
    }


def classify(
    old: dict[str, Any], new: dict[str, Any], new_info: DatasetInfo,
    old_ident: list[list[Any]], new_ident: list[list[Any]], kind: str,
) -> str:
    """``"append"`` if ``new`` only grew along one dimension of ``old``, else
    ``"replace"`` (``old``/``new``: :func:`_shape` of the two descriptions; ``kind``:
    "file", "glob" or "store", see :meth:`Source.kind`)."""
    if old["variables"] != new["variables"] or old["attrs"] != new["attrs"]:
        return "replace"
    grown = [d for d, n in new["dims"].items() if n != old["dims"].get(d)]
    if set(new["dims"]) != set(old["dims"]) or len(grown) != 1:
        return "replace"
    dim = grown[0]
    old_n = old["dims"][dim]
    if new["dims"][dim] < old_n:
        return "replace"
    for name, value in old["index"].items():
        var = new_info.stored.get(name)
        if var is None or var.values is None:
            return "replace"
        values = np.ascontiguousarray(var.values[:old_n] if name == dim else var.values)
        if hashlib.sha256(values.tobytes()).hexdigest()[:16] != value:
            return "replace"
    if kind == "glob" and new_ident[: len(old_ident)] != old_ident:
        return "replace"  # an old file changed: the new ones must come after them
    if kind == "file" and old_ident[0][:2] != new_ident[0][:2]:
        return "replace"  # another file (os.replace): not an append
    return "append"


@dataclass(frozen=True)
class Entry:
    """One recorded version of a dataset."""

    version: str
    digest: str
    #: the version this one followed (``None``: the first the log knows)
    parent: str | None
    #: "new", "append" or "replace"
    change: str
    #: Unix time the change was noticed
    at: float
    #: dimension sizes
    dims: dict[str, int]
    #: Icechunk: the snapshot, which stays readable after later commits
    snapshot: str | None = None


class VersionLog:
    """The version log of one site, shared by its site process and workers (see module
    docstring). Keys are ``site/name|path``: two sites or test runs with the same names
    but different files never mix."""

    def __init__(self, site: str, directory: str | None = None):
        directory = directory or tempfile.gettempdir()
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, f"federation-versions-{site}.json")
        self._cache: tuple[tuple[int, int], dict[str, Any]] | None = None
        #: the log's content while :meth:`batch` holds it (written once at the end)
        self._held: dict[str, Any] | None = None

    @staticmethod
    def key(ref: str, source: Source) -> str:
        return f"{ref}|{os.path.abspath(source.path) if not is_url(source.path) else source.path}"

    def _load(self) -> dict[str, Any]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}
        mtime = (st.st_ino, st.st_mtime_ns)  # each write is a new file (os.replace)
        if self._cache is None or self._cache[0] != mtime:
            try:
                with open(self.path) as f:
                    self._cache = (mtime, json.load(f))
            except (OSError, ValueError):
                return {}
        return self._cache[1]

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        if self._held is not None:  # inside batch(): it writes the file once
            yield self._held
            return
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._cache = None
            data = self._load()
            yield data
            tmp = f"{self.path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump(data, f)
            os.replace(tmp, self.path)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Record many entries with one write of the log (a site describing its whole
        catalog at start-up): each :meth:`record` rewrites the file, which made a
        catalog of n datasets cost O(n²). Other processes wait for the lock meanwhile."""
        with self._locked() as data:
            self._held = data
            try:
                yield
            finally:
                self._held = None

    def entries(self, key: str) -> list[Entry]:
        return [Entry(**e) for e in self._load().get(key, {}).get("versions", ())]

    def find(self, key: str, dig: str) -> Entry | None:
        """The entry of identity digest ``dig``, if recorded."""
        for e in reversed(self.entries(key)):
            if e.digest == dig:
                return e
        return None

    def current(self, key: str) -> Entry | None:
        entries = self.entries(key)
        return entries[-1] if entries else None

    def record(
        self, key: str, info: DatasetInfo, ident: list[list[Any]], kind: str
    ) -> tuple[Entry, DatasetInfo]:
        """Record the description ``info`` of identity ``ident``; returns the entry and
        ``info`` with the recorded version and change time (an identity recorded before,
        by another process, keeps its version)."""
        dig = digest(ident)
        with self._locked() as data:
            slot = data.setdefault(key, {"versions": []})
            entries = slot["versions"]
            for e in reversed(entries):
                if e["digest"] == dig:
                    entry = Entry(**e)
                    break
            else:
                shape = _shape(info)
                last = entries[-1] if entries else None
                change = "new" if last is None else classify(
                    slot["shape"], shape, info, slot["ident"], ident, kind
                )
                entry = Entry(
                    version=info.version, digest=dig,
                    parent=last["version"] if last else None, change=change,
                    at=time.time(), dims=info.dims,
                    snapshot=ident[0][1] if ident and ident[0][0] == "snapshot" else None,
                )
                entries.append(vars(entry))
                del entries[:-KEEP]
                slot.update(shape=shape, ident=ident)
        return entry, replace(info, version=entry.version, changed=entry.at)

    def snapshot(self, key: str, version: str) -> str | None:
        """The Icechunk snapshot of ``version`` (a current or remembered one)."""
        for e in self.entries(key):
            if e.version == version and e.snapshot:
                return e.snapshot
        return self._load().get(key, {}).get("snapshots", {}).get(version)

    def remember(self, key: str, version: str, snapshot: str) -> None:
        """Remember the snapshot of an old version opened on request (not a change)."""
        with self._locked() as data:
            data.setdefault(key, {"versions": []}).setdefault("snapshots", {})[version] = snapshot

    def compatible(self, key: str, pinned: str, current: str) -> bool:
        """Whether reads pinned to ``pinned`` stay valid at ``current``: every change
        between them appended along a dimension."""
        if pinned == current:
            return True
        by_version = {e.version: e for e in self.entries(key)}
        version: str | None = current
        while version != pinned:
            e = by_version.get(version)
            if e is None or e.change != "append":
                return False
            version = e.parent
        return True


def describe_version(
    log: VersionLog, ref: str, source: Source, describe: Callable[[], DatasetInfo]
) -> tuple[Entry, DatasetInfo]:
    """Describe ``source`` (``describe()``, e.g. :func:`~federation.describe.describe_source`)
    while its files stay put, and record the version in ``log``."""
    ident, info = settled(describe, source, f"describing {ref}")
    return log.record(VersionLog.key(ref, source), info, ident, source.kind)


def current_version(
    log: VersionLog, ref: str, source: Source, describe: Callable[[], DatasetInfo]
) -> tuple[list[list[Any]], Entry]:
    """The identity of ``source`` now and its recorded version (described and recorded
    first if nobody has yet)."""
    ident = identity(source)
    entry = log.find(VersionLog.key(ref, source), digest(ident))
    if entry is None:
        entry, _ = describe_version(log, ref, source, describe)
        ident = identity(source)
    return ident, entry
