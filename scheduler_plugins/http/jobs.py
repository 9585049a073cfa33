"""The job runner: method calls submitted through the hub's own client, watched to the end.

A call is two tasks: :func:`federation.sitecalls.run_method` (the routing plugin runs it at
the owning site) and :func:`.codec.encode_result` next to it, so only the result's JSON
text leaves the site. A :class:`Job` tracks their progress (from the scheduler's
transitions), status and result; finished jobs are kept ``federation.http.job-ttl``
seconds.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dask

from federation.protocol import API_PATH
from federation.sitecalls import run_method

from .codec import encode_result
from .common import setting
from .errors import domain_error

if TYPE_CHECKING:
    from distributed import Client

    from ..state import FederationState


@dataclass
class Job:
    """One call of a method (see ``records.Job`` for its JSON form)."""

    id: str
    method: str
    #: the token hash that may see it (``None``: everyone, on an open hub)
    owner: str | None
    keys: set = field(default_factory=set)
    done: int = 0
    #: UNIX times
    submitted: float = field(default_factory=time.time)
    finished: float | None = None
    status: str = "pending"  # pending, running, finished, error, cancelled
    result: str | None = None  # JSON text
    error: dict[str, Any] | None = None
    future: Any = None
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def to_json(self, prefix: str, result: bool = True) -> str:
        """The job's JSON text; with its ``result`` (JSON text as computed) if ``result``."""
        total = max(len(self.keys), 1)
        done = total if self.status == "finished" else min(self.done, total)
        meta: dict[str, Any] = {
            "id": self.id,
            "method": self.method,
            "status": self.status,
            "progress": {"done": done, "total": total, "fraction": done / total},
            "submitted": self.submitted,
            "finished": self.finished,
            "href": f"{prefix}/{API_PATH}/jobs/{self.id}",
        }
        if self.error is not None:
            meta["error"] = self.error
        text = json.dumps(meta)
        if result and self.result is not None:
            return f'{text[:-1]}, "result": {self.result}}}'
        return text


class JobRunner:
    """Submits calls, follows their tasks' transitions and keeps the jobs."""

    def __init__(self, state: FederationState):
        self.state = state
        self.jobs: dict[str, Job] = {}
        self._job_of_key: dict[Any, Job] = {}
        self._client: Client | None = None
        self._client_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()

    async def client(self) -> Client:
        """The hub's own client (started on first use)."""
        async with self._client_lock:
            if self._client is None:
                from distributed import Client

                scheduler = self.state.scheduler
                # the hub's own security: with TLS, calls are submitted as the hub, after
                # the route checked the caller's grants
                self._client = await Client(
                    scheduler.address, asynchronous=True, name="federation-http",
                    timeout="20s", security=scheduler.security,
                )
                # also over plain TCP, it is the hub
                self.state.client_identity[self._client.id] = ("hub", "http-api")
            return self._client

    def transition(self, key: Any, finish: str) -> None:
        """A task of a job reached ``finish``: count it, mark the job running."""
        job = self._job_of_key.get(key)
        if job is None:
            return
        if finish == "memory":
            job.done += 1
        if finish in ("memory", "processing") and job.status == "pending":
            job.status = "running"

    @property
    def watching(self) -> bool:
        """Whether any job's tasks are in flight (else transitions need no look-up)."""
        return bool(self._job_of_key)

    def prune(self) -> None:
        """Forget jobs finished more than ``federation.http.job-ttl`` seconds ago."""
        ttl = float(setting("job-ttl"))
        now = time.time()
        for job_id, job in list(self.jobs.items()):
            if job.finished is not None and now - job.finished > ttl:
                del self.jobs[job_id]

    async def submit(self, ref: str, kwargs: dict[str, Any], owner: str | None) -> Job:
        """Start calling method ``ref`` with decoded, validated ``kwargs``."""
        client = await self.client()
        job = Job(id=secrets.token_urlsafe(12), method=ref, owner=owner)
        call = dask.delayed(run_method, pure=False)(ref, **kwargs)
        encoded = dask.delayed(encode_result, pure=False)(
            call, dask_key_name=f"federation-http-result-{job.id}"
        )
        job.keys = set(dict(encoded.__dask_graph__()))
        for key in job.keys:
            self._job_of_key[key] = job
        self.jobs[job.id] = job
        job.future = client.compute(encoded)
        task = asyncio.create_task(self._watch(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _watch(self, job: Job) -> None:
        limit = int(setting("max-result-bytes"))
        try:
            text = await job.future
            if len(text) > limit:
                job.status = "error"
                job.error = {
                    "code": "result_too_large",
                    "message": f"the result's JSON form has {len(text)} bytes, more than "
                    f"federation.http.max-result-bytes ({limit}); reduce it in the method, "
                    "or publish it as a result and read it with the Python client",
                }
            else:
                job.result = text
                job.status = "finished"
        except asyncio.CancelledError:
            job.status = "cancelled"
        except Exception as e:
            job.status = "error"
            api = domain_error(e)
            job.error = {
                "code": api.code if api else "method_failed",
                "type": type(e).__name__,
                "message": api.message if api else str(e),
            }
        finally:
            job.finished = time.time()
            for key in job.keys:
                self._job_of_key.pop(key, None)
            job.future = None  # the scheduler may forget the tasks
            job.event.set()
            self.prune()

    async def cancel(self, job: Job) -> None:
        """Cancel ``job`` if it still runs."""
        if job.future is not None and not job.event.is_set():
            await job.future.cancel()
            job.status = "cancelled"

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._client is not None:
            await self._client.close()
            self._client = None
