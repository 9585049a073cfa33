"""The site process's check for changed datasets: every ``refresh:`` seconds, and at
once on SIGHUP.

A check costs a ``stat`` per file (see :func:`federation.sources.identity`); only a
dataset whose files changed is opened again, described, recorded in the version log
(:mod:`federation.versions`) and announced to the hub with its new version. A dataset a
provider is still writing (it cannot be opened, or its files change while it is
described) keeps its version until a later check.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable

import zarr

from .catalog import DatasetInfo
from .config import SiteConfig
from .sources import Source, identity, source_for
from .versions import SETTLE_SECONDS, VersionLog, digest

logger = logging.getLogger("federation.site")


#: a zarr store counts as written when none of its files changed for this long
QUIET_SECONDS = 0.5


def _all_files(path: str) -> list[tuple[str, int, int]]:
    out = []
    for root, _, names in os.walk(path):
        for n in names:
            try:
                st = os.stat(os.path.join(root, n))
            except FileNotFoundError:  # replaced while we walk: the next walk differs
                continue
            out.append((os.path.join(root, n), st.st_size, st.st_mtime_ns))
    return sorted(out)


def _zarr_directory(source: Source) -> bool:
    """A zarr store in a local directory. Icechunk commits atomically (its files are
    checked around every read), other sources are single files or URLs."""
    return source.kind == "store" and os.path.isdir(source.path) and source.engine != "icechunk"


def missing_chunks(source: Source) -> int:
    """Chunks of a zarr store's arrays that have no file yet (0 for other sources, or a
    store zarr cannot open right now). Counted by zarr itself (``nchunks`` minus
    ``nchunks_initialized``: one listing of the store)."""
    if not _zarr_directory(source):
        return 0
    try:
        group = zarr.open_group(source.path, mode="r", use_consolidated=False)
        return sum(a.nchunks - a.nchunks_initialized for _, a in group.arrays())
    except Exception:  # mid-write metadata, or not a group: the quiet walk decides
        return 0


def wait_until_quiet(source: Source, missing_before: int = 0) -> int:
    """Wait until a zarr store's files (chunks too) stop changing and it has no more
    chunks without a file than ``missing_before`` (the count at its last description),
    up to :data:`~federation.versions.SETTLE_SECONDS`; returns the count it ended with.

    zarr (and xarray's ``to_zarr(append_dim=...)``) first resizes the arrays' metadata
    and then writes the new chunks: described in between, the new steps would read as
    fill values. A writer on a busy machine can pause longer than
    :data:`QUIET_SECONDS` between the two, so quiet files alone do not prove the append
    done; chunks the new extent has but the files lack do. A store that leaves chunks
    unwritten on purpose (all fill value) keeps its count, and one whose append adds such
    chunks waits the full settle time once. A full walk costs one ``stat`` per chunk
    file, paid only when the metadata changed.
    """
    if not _zarr_directory(source):
        return 0
    deadline = time.monotonic() + SETTLE_SECONDS
    before = _all_files(source.path)
    missing = missing_before
    while time.monotonic() < deadline:
        time.sleep(QUIET_SECONDS)
        now = _all_files(source.path)
        missing = missing_chunks(source)
        if now == before and missing <= missing_before:
            return missing
        before = now
    if missing > missing_before:
        logger.info("Dataset at %s: %d chunks still have no file after %.0f s; describing it "
                    "as it is", source.path, missing, SETTLE_SECONDS)
    return missing


class Watcher:
    """Finds the site's datasets whose files changed and announces their new versions.

    ``describe(name, source, log)`` describes one dataset as the site does at start-up
    (:func:`federation.site.describe_config`); ``announce(infos)`` sends new versions
    to the hub.
    """

    def __init__(
        self,
        cfg: SiteConfig,
        log: VersionLog,
        catalog: list[DatasetInfo],
        describe: Callable[[str, Source, VersionLog], DatasetInfo],
        announce: Callable[[list[DatasetInfo]], Awaitable[None]],
    ):
        self.cfg = cfg
        self.log = log
        self.describe = describe
        self.announce = announce
        self.sources = {name: source_for(ds) for name, ds in cfg.datasets.items()}
        self.catalog = {info.name: info for info in catalog}
        #: dataset name -> identity digest of the version announced
        self.digests = {
            info.name: self._digest_of(info) for info in catalog if info.name in self.sources
        }
        #: dataset name -> chunks without a file at its last description (counted when
        #: :meth:`run` starts, off the event loop)
        self.missing: dict[str, int] = {}
        self._wake = asyncio.Event()

    def _digest_of(self, info: DatasetInfo) -> str | None:
        key = VersionLog.key(info.ref, self.sources[info.name])
        for entry in self.log.entries(key):
            if entry.version == info.version:
                return entry.digest
        return None

    def wake(self) -> None:
        """Check now (the SIGHUP handler)."""
        self._wake.set()

    def check(self) -> list[DatasetInfo]:
        """New descriptions of the datasets whose files changed (blocking: run it in a
        thread)."""
        changed = []
        for name, source in self.sources.items():
            try:
                now = digest(identity(source))
            except OSError as e:  # removed, or being replaced: keep the last version
                logger.info("Dataset %s/%s: cannot check its files (%s); keeping version %s",
                            self.cfg.site, name, e, self.catalog[name].version)
                continue
            if now == self.digests.get(name):
                continue
            old = self.catalog[name]
            try:
                missing = wait_until_quiet(source, self.missing.get(name, 0))
                info = self.describe(name, source, self.log)
            except Exception as e:  # a provider mid-write: the next check sees it done
                logger.info("Dataset %s/%s changed but cannot be described yet (%s: %s); "
                            "keeping version %s", self.cfg.site, name, type(e).__name__, e,
                            old.version)
                continue
            self.digests[name] = self._digest_of(info)
            self.missing[name] = missing
            if info.version != old.version:
                self.catalog[name] = info
                changed.append(info)
        return changed

    async def run(self) -> None:
        """Check every ``refresh`` seconds (``0``: only when woken) until cancelled."""
        # one store listing per dataset: in a thread, not in the site's start-up
        self.missing = await asyncio.to_thread(
            lambda: {name: missing_chunks(src) for name, src in self.sources.items()})
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.cfg.refresh or None)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            changed = await asyncio.to_thread(self.check)
            if not changed:
                continue
            for info in changed:
                logger.info("Dataset %s changed: version %s %s", info.ref, info.version,
                            info.dims)
            try:
                await self.announce(changed)
            except Exception as e:  # the hub is away: the next registration sends them
                logger.warning("Could not announce changed datasets to the hub: %s", e)
