"""The meter: connected, busy and billed worker-seconds.

Pure arithmetic over samples and task records, so the demo, the benchmarks
and the tests all measure the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass
class Meter:
    """Integrates a step function of worker count over time.

    Call ``sample(now, workers)`` whenever the count may have changed; the
    count is taken to hold from one sample to the next.
    """

    worker_s: float = 0.0
    peak: int = 0
    timeline: list[tuple[float, int]] = field(default_factory=list)
    _last: tuple[float, int] | None = None

    def sample(self, now: float, workers: int) -> None:
        if self._last is not None:
            t, n = self._last
            self.worker_s += n * max(0.0, now - t)
        self._last = (now, workers)
        self.peak = max(self.peak, workers)
        if not self.timeline or self.timeline[-1][1] != workers:
            self.timeline.append((now, workers))


def busy_worker_seconds(
    task_stream: Iterable[Mapping], nthreads: Mapping[str, int] | None = None
) -> float:
    """Worker-seconds spent computing: each task's compute time over its worker's threads.

    ``task_stream`` is what ``distributed.get_task_stream`` records.
    """
    nthreads = nthreads or {}
    busy = 0.0
    for task in task_stream:
        threads = nthreads.get(task.get("worker"), 1)
        for part in task.get("startstops", ()):
            if part["action"] == "compute":
                busy += (part["stop"] - part["start"]) / threads
    return busy


def last_task_end(task_stream: Iterable[Mapping]) -> float | None:
    ends = [
        part["stop"]
        for task in task_stream
        for part in task.get("startstops", ())
        if part["action"] == "compute"
    ]
    return max(ends, default=None)
