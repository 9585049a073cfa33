"""Site workers log a user's mistake as one INFO line, not an ERROR with a traceback.

distributed's worker logs every failed task as ``Compute Failed`` at ERROR with the task
and traceback. When the task failed with a :class:`~federation.errors.FederationError`
(a duplicate result name, bad method arguments, a shared method that raised) the user
already got the error with its full text; the site's operator needs one line.
"""

from __future__ import annotations

import logging

from distributed import WorkerPlugin

from .errors import FederationError

#: the logger and message distributed uses for a failed task
WORKER_LOGGER = "distributed.worker"
COMPUTE_FAILED = "Compute Failed"


def _subclass_names(cls: type) -> set[str]:
    return {cls.__name__}.union(*(_subclass_names(c) for c in cls.__subclasses__()))


class UserMistakesAsInfo(logging.Filter):
    """Turn ``Compute Failed`` records of FederationErrors into one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str) or not record.msg.startswith(COMPUTE_FAILED):
            return True
        try:
            key, _, _, exception_text, _ = record.args
        except (TypeError, ValueError):
            return True
        name = str(exception_text).split("(", 1)[0]
        if name in _subclass_names(FederationError):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "Task %s failed: %s", (key, exception_text)
        return True


class QuietUserMistakes(WorkerPlugin):
    """Installs :class:`UserMistakesAsInfo` in a site's worker process."""

    name = "federation-quiet-user-mistakes"

    def setup(self, worker: object) -> None:
        logger = logging.getLogger(WORKER_LOGGER)
        if not any(isinstance(f, UserMistakesAsInfo) for f in logger.filters):
            logger.addFilter(UserMistakesAsInfo())
