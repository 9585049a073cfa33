"""Capabilities: the hub's signed permission for one site-bound call in one task.

Recognising reads in client-supplied code cannot be the security boundary: a read
wrapped in ``functools.partial``, ``dask.utils.apply``, a lambda or a container is a
read the hub never saw. So the site-bound calls that touch a site's data or run its
code (:mod:`federation.sitecalls`: reads, method calls, result writes) refuse to run
unless the hub signed a capability for exactly the task that is running and exactly the
reference asked for.

At registration the hub gives each site a secret over their mutually authenticated
channel (:meth:`scheduler_plugins.catalog.CatalogPlugin.register_site`). When a graph
arrives, the hub finds the site-bound calls it authorises (the task's own calls, seen
in its spec) and attaches to the task's annotations, under ``"federation"``::

    {"caps": [[kind, ref, client, egress, expires, mac], ...]}

``mac`` is an HMAC-SHA256 with the site's secret over (kind, reference, task key,
client identity, egress class, expiry). The annotations travel to the worker with the
task; the site-bound function looks up the capability of the *task its thread is
executing* and checks the MAC, so a capability cannot be moved to another task or
reference, and a client cannot make one (it never learns the secret).

A site whose context has no secret (plain Dask workers outside a federation, as the
benchmarks' baselines run) does not check.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from .errors import CapabilityError

#: Annotation key the hub owns; a client's own value under it is dropped.
ANNOTATION = "federation"

#: What each site-bound function is called in refusals.
WHAT = {"dataset": "read of", "method": "call of method", "result": "write of result"}


@dataclass(frozen=True)
class Capability:
    """One signed permission: ``kind`` (dataset, method, result) of ``ref`` in task ``key``.

    ``egress`` is the lineage's egress class (``any``, ``none``, ``aggregated:<bytes>``);
    ``expires`` is a Unix time in seconds.
    """

    kind: str
    ref: str
    client: str
    egress: str
    expires: float
    mac: str

    def to_wire(self) -> list[Any]:
        return [self.kind, self.ref, self.client, self.egress, self.expires, self.mac]

    @classmethod
    def from_wire(cls, item: Any) -> Capability:
        kind, ref, client, egress, expires, mac = item
        return cls(str(kind), str(ref), str(client), str(egress), float(expires), str(mac))


def egress_class(policy: str, limit: int | None = None) -> str:
    """The wire form of an egress class: ``any``, ``none`` or ``aggregated:<bytes>``."""
    return f"aggregated:{limit}" if policy == "aggregated" else policy


def egress_fields(egress: str) -> dict[str, Any]:
    """``{"egress": policy, "max_egress_bytes": limit}`` of a wire egress class."""
    policy, _, limit = egress.partition(":")
    return {"egress": policy, "max_egress_bytes": int(limit) if limit else None}


def _mac(secret: bytes, kind: str, ref: str, key: Any, client: str, egress: str,
         expires: float) -> str:
    # repr(key): task keys are str or tuples; the worker sees the same object
    message = "\x1f".join((kind, ref, repr(key), client, egress, repr(float(expires))))
    return hmac.new(secret, message.encode(), sha256).hexdigest()


def sign(secret: bytes, kind: str, ref: str, key: Any, client: str, egress: str,
         expires: float) -> Capability:
    """The hub's capability for ``kind`` ``ref`` in task ``key`` (see module docstring)."""
    return Capability(kind, ref, client, egress, expires,
                      _mac(secret, kind, ref, key, client, egress, expires))


def valid(secret: bytes, cap: Capability, key: Any, now: float | None = None) -> str | None:
    """Why ``cap`` does not authorise task ``key`` (``None``: it does)."""
    expected = _mac(secret, cap.kind, cap.ref, key, cap.client, cap.egress, cap.expires)
    if not hmac.compare_digest(expected, cap.mac):
        return "its signature does not match this task (forged, or copied from another task)"
    if (time.time() if now is None else now) > cap.expires:
        return "it has expired (federation.capability-ttl); resubmit the computation"
    return None


# -- at the site ------------------------------------------------------------------------------


def require(secret: bytes | None, kind: str, ref: str) -> Capability | None:
    """The verified capability for ``kind`` ``ref`` in the task this thread executes,
    checked with the site's ``secret`` (its :class:`~federation.sitecontext.SiteContext`
    holds it).

    Raises :class:`~federation.errors.CapabilityError` naming what is missing. Returns
    ``None`` for a site without a secret (outside a federation: no checks).
    """
    if secret is None:
        return None
    from distributed import get_worker
    from distributed.worker import thread_state

    what = f"{WHAT[kind]} {ref!r}"
    key = getattr(thread_state, "key", None)
    try:
        worker = get_worker()
    except ValueError:
        worker = None
    ts = worker.state.tasks.get(key) if worker is not None and key is not None else None
    if ts is None:
        raise CapabilityError(
            f"{what} refused: it did not run as a task scheduled by the hub (client.run and "
            "code outside a task have no capability); compute it through the federation"
        )
    caps = ((ts.annotations or {}).get(ANNOTATION) or {}).get("caps") or ()
    reasons = []
    for item in caps:
        try:
            cap = Capability.from_wire(item)
        except (TypeError, ValueError):
            continue
        if cap.kind != kind or cap.ref != ref:
            continue
        reason = valid(secret, cap, key)
        if reason is None:
            return cap
        reasons.append(reason)
    if reasons:
        raise CapabilityError(f"{what} in task {key!r} refused: the capability is invalid: "
                              f"{reasons[0]}")
    raise CapabilityError(
        f"{what} in task {key!r} refused: the hub signed no capability for it. The hub "
        "authorises only calls it sees as a task's own call (as fed.open_dataset, "
        "fed.method and fed.publish_result build them); a call wrapped in partial, apply, "
        "a lambda or another function is not authorised"
    )
