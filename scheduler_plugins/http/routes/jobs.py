"""``GET jobs/{id}`` (status, progress, result of a call) and ``DELETE`` (cancel it)."""

from __future__ import annotations

from .. import records
from ..base import BaseHandler
from ..common import setting
from ..errors import ApiError
from ..jobs import Job
from ..spec import Operation, Route


class JobHandler(BaseHandler):
    operations = {
        "get": Operation(
            "Status, progress and (when finished) result of a call",
            {200: (records.Job, "the job")}, errors=(401, 403, 404),
        ),
        "delete": Operation(
            "Cancel a call", {200: (records.Job, "the job")}, errors=(401, 403, 404),
        ),
    }

    def _job(self, job_id: str) -> Job:
        """The job, if it exists for this caller's token (404 otherwise)."""
        job = self.api.runner.jobs.get(job_id)
        if job is None or (job.owner is not None and job.owner != self.owner):
            raise ApiError(
                404, "not_found",
                f"no job {job_id!r} (finished jobs are kept for "
                f"{float(setting('job-ttl')):g} s)",
            )
        return job

    def get(self, job_id: str) -> None:
        self.api.runner.prune()
        self.send_json(self._job(job_id).to_json(self.api.prefix))

    async def delete(self, job_id: str) -> None:
        job = self._job(job_id)
        await self.api.runner.cancel(job)
        self.send_json(job.to_json(self.api.prefix, result=False))


routes: list[Route] = [Route("/jobs/{id}", JobHandler, patterns={"id": "[A-Za-z0-9_-]+"})]
