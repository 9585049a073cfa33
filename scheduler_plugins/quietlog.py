"""Rate-limited, deduplicated logging for messages a peer can trigger at will.

A flood of hostile or broken connections must not flood the hub's log: each kind of
message is logged at most once per interval, and the next one that gets through says how
many were dropped in between.
"""

from __future__ import annotations

import logging
import time


class QuietLog:
    """Log each message *kind* at most once per ``interval`` seconds.

    Kinds are short fixed strings chosen by the caller (never peer-supplied text), so the
    table stays small however many peers misbehave.
    """

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self.logger = logger
        self.interval = interval
        #: kind -> (monotonic time it was last logged, messages dropped since)
        self._seen: dict[str, tuple[float, int]] = {}

    def log(self, level: int, kind: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless ``kind`` was logged within the interval.

        Returns whether it was logged.
        """
        now = time.monotonic()
        last, dropped = self._seen.get(kind, (-self.interval, 0))
        if now - last < self.interval:
            self._seen[kind] = (last, dropped + 1)
            return False
        self._seen[kind] = (now, 0)
        if dropped:
            msg += " (%d more like this in the last %.0f s)"
            args = (*args, dropped, self.interval)
        self.logger.log(level, msg, *args)
        return True

    def dropped(self, kind: str) -> int:
        """Messages of ``kind`` not logged since it was last logged."""
        return self._seen.get(kind, (0.0, 0))[1]
