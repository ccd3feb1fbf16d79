"""Scheduler plugin: the workload, per task group and per worker, in one cheap RPC.

A tick must not cost more as more tasks wait. The scheduler already counts
tasks per state in each task group, so the snapshot walks task groups (a
handful per graph) and workers, never tasks. The resources a group asks for
are learned once per group, from its first task to become ready.
"""

from __future__ import annotations

import time
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

SNAPSHOT_HANDLER = "rawcloud_snapshot"
FAIL_HANDLER = "rawcloud_fail_group"
#: A worker tells of its coming end (a spot interruption notice).
NOTICE_HANDLER = "rawcloud_notice"
#: Task states that are work for workers now: ready, running, or starved of a worker.
WAITING_STATES = ("queued", "no-worker", "processing")


class WorkloadPlugin(SchedulerPlugin):
    name = "rawcloud-workload"

    def __init__(self) -> None:
        self.group_resources: dict[str, dict[str, float]] = {}
        self.idle_since: dict[str, float] = {}
        self.leaving: dict[str, float] = {}  # worker name -> when its node ends

    async def start(self, scheduler) -> None:
        self.scheduler = scheduler
        scheduler.handlers[SNAPSHOT_HANDLER] = self.snapshot
        scheduler.handlers[FAIL_HANDLER] = self.fail_group
        scheduler.handlers[NOTICE_HANDLER] = self.notice

    def notice(self, name: str, deadline: float) -> None:
        self.leaving[name] = deadline

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        if finish not in WAITING_STATES:
            return
        ts = self.scheduler.tasks.get(key)
        if ts is not None and ts.group.name not in self.group_resources:
            self.group_resources[ts.group.name] = dict(ts.resource_restrictions or {})

    def snapshot(self) -> dict[str, Any]:
        s = self.scheduler
        now = time.time()
        groups = []
        for name, tg in s.task_groups.items():
            waiting = sum(tg.states[state] for state in WAITING_STATES)
            if waiting:
                groups.append(
                    {
                        "name": name,
                        "tasks": waiting,
                        "duration_s": s._get_prefix_duration(tg.prefix),
                        # Otherwise duration_s is distributed's unknown-task-duration guess.
                        "seen": tg.prefix.duration_average >= 0 or tg.prefix.max_exec_time > 0,
                        "resources": self.group_resources.get(name, {}),
                    }
                )
        for gone in set(self.group_resources) - set(s.task_groups):
            del self.group_resources[gone]

        workers = []
        for ws in s.workers.values():
            if ws.processing:
                self.idle_since.pop(ws.address, None)
                idle_s = None
            else:
                idle_s = now - self.idle_since.setdefault(ws.address, now)
            workers.append(
                {
                    "name": str(ws.name),
                    "nthreads": ws.nthreads,
                    "processing": len(ws.processing),
                    "idle_s": idle_s,
                    "bytes": ws.nbytes,
                }
            )
        for gone in set(self.idle_since) - set(s.workers):
            del self.idle_since[gone]
        for name in [n for n, end in self.leaving.items() if end < now - 600]:
            del self.leaving[name]  # long gone: nobody asks any more
        return {"groups": groups, "workers": workers, "leaving": sorted(self.leaving)}

    def fail_group(self, group: str, message: str) -> int:
        """Err the tasks of ``group`` that no worker can run, so nobody waits forever."""
        from distributed.protocol import pickle

        from .errors import InfeasibleRequest

        s = self.scheduler
        stimulus_id = f"rawcloud-infeasible-{time.time()}"
        error = pickle.dumps(InfeasibleRequest(message))
        recommendations: dict = {}
        failed = 0
        for ts in list(s.unrunnable):
            if ts.group.name == group and ts.state == "no-worker":
                recommendations.update(
                    s.transition(ts.key, "erred", exception=error, cause=ts.key,
                                 stimulus_id=stimulus_id)
                )
                failed += 1
        s.transitions(recommendations, stimulus_id)
        return failed
