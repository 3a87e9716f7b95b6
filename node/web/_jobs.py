"""Long actions started from a page (a release, a paid run), watched live.

A `Job` runs in the web app's nursery, not in the request that started it, so
the page answers at once and a closed tab cancels nothing. Its steps are
appended as it goes; `changed` wakes the server-sent-event streams that
watch it. Jobs are kept in memory, the newest ``MAX_JOBS``; a finished job's
result stays readable until it is pushed out. Cancelled at the daemon's stop.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from mercato import MercatoError

log = logging.getLogger("mercato.web")

MAX_JOBS = 200


@dataclass
class Job:
    id: str
    kind: str
    title: str
    steps: list[str] = field(default_factory=list)
    state: str = "running"  # running, done, failed
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    started: float = field(default_factory=time.time)
    version: int = 0
    _changed: trio.Event = field(default_factory=trio.Event)

    def step(self, text: str) -> None:
        self.steps.append(text)
        self._bump()

    def _bump(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_change(self, seen: int) -> None:
        """Return once ``version`` is past ``seen``."""
        while self.version <= seen:
            await self._changed.wait()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "steps": self.steps,
            "state": self.state,
            "result": self.result,
            "error": self.error,
        }


Work = Callable[[Job], Awaitable[dict[str, Any]]]


class Jobs:
    """The jobs of one daemon run."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def close(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def start(self, kind: str, title: str, work: Work) -> Job:
        """Start ``work`` in the background; its result or error lands on the job.

        A `MercatoError` fails the job with its message (what the user should
        read); anything else fails it with a pointer to the log.
        """
        if self._nursery is None:
            raise RuntimeError("the web app's jobs are not running")
        job = Job(secrets.token_urlsafe(12), kind, title)
        while len(self._jobs) >= MAX_JOBS:
            self._jobs.pop(next(iter(self._jobs)))
        self._jobs[job.id] = job

        async def background() -> None:
            try:
                job.result = await work(job)
                job.state = "done"
            except MercatoError as exc:
                job.error, job.state = str(exc), "failed"
            except Exception:
                log.exception("web job failed", extra={"job": job.id, "kind": kind})
                job.error, job.state = "internal error; see the daemon's log", "failed"
            job._bump()

        self._nursery.start_soon(background)
        return job
