"""Where each video of an order is, and when the order will be ready: computed, not guessed.

The place in the queue counts every waiting job of every seller in the order the engine takes
them, from 1 for the next to start, so no two jobs share a place. The estimate uses the median
duration of the last delivered jobs of each model (a fixed guess only before there are any).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from neurocards.store.jobs import JobState
from neurocards.store.orders import OrderJob

DEFAULT_DURATION_S = 300.0  # before any job of a model has been delivered


@dataclass(frozen=True)
class JobProgress:
    pos: int
    product: str
    step: str  # a key of texts.STATUS_LINES
    values: dict[str, object]


@dataclass(frozen=True)
class OrderProgress:
    jobs: list[JobProgress]
    done: int
    total: int
    finished: bool
    eta_minutes: int | None  # None once every job has ended


def _elapsed(seconds: float) -> str:
    seconds = int(seconds) // 5 * 5  # the text changes at most every 5 s, like the edits
    return f"{seconds // 60}:{seconds % 60:02d}"


def job_progress(job: OrderJob, place: int | None, attempts_max: int, now: float) -> JobProgress:
    values: dict[str, object] = {}
    if job.state is JobState.DONE:
        step = "done"
    elif job.state is JobState.FAILED:
        step, values = "refunded", {"refund": job.refunded, "reason": job.error_class or ""}
    elif job.state in (JobState.SENDING, JobState.DOWNLOADING):
        step = job.state.value
    elif job.state in (JobState.SUBMITTING, JobState.GENERATING) and job.claimed:
        step = "generating"
        values = {"attempt": min(job.attempts + 1, attempts_max), "attempts": attempts_max,
                  "elapsed": _elapsed(now - (job.started_at or now))}
    elif place is not None:
        step, values = "waiting", {"place": place}
    elif job.claimed:
        step = "starting"
    else:
        step = "waiting_retry"
    return JobProgress(job.pos, job.product, step, values)


def eta_seconds(jobs: list[OrderJob], places: dict[int, int], medians: dict[str, float], parallel: int,
                now: float) -> float:
    """The last of the order's unfinished jobs: a running one needs what is left of its model's
    median; a waiting one waits for the slots ahead of it to turn over, then needs its median."""
    latest = 0.0
    for job in jobs:
        if job.state in (JobState.DONE, JobState.FAILED):
            continue
        median = medians.get(job.model, DEFAULT_DURATION_S)
        place = places.get(job.id)
        if place is None:
            left = max(median - (now - (job.started_at or now)), 0.1 * median)
        else:
            left = math.ceil(place / max(parallel, 1)) * median + median
        latest = max(latest, left)
    return latest


def order_progress(jobs: list[OrderJob], places: dict[int, int], medians: dict[str, float], *,
                   parallel: int, attempts_max: int, now: float) -> OrderProgress:
    finished = all(j.state in (JobState.DONE, JobState.FAILED) for j in jobs)
    eta = None if finished else max(1, math.ceil(eta_seconds(jobs, places, medians, parallel, now) / 60))
    return OrderProgress(
        jobs=[job_progress(j, places.get(j.id), attempts_max, now) for j in jobs],
        done=sum(j.state is JobState.DONE for j in jobs), total=len(jobs), finished=finished, eta_minutes=eta)
