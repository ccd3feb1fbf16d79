"""RawCloudAdaptive: scheduler snapshot -> pure policy -> provider, every tick.

Thin on purpose: every decision is made by ``policy.scaling.decide``; this
module only gathers its inputs and carries out its outputs, and keeps a short
history of what was decided and why (``cluster.adaptive_log``).
"""

from __future__ import annotations

import logging
import numbers
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from dask.utils import parse_timedelta
from tornado.ioloop import PeriodicCallback

from .errors import InvalidRequest
from .policy.scaling import (
    Decision,
    GroupWork,
    PoolPlan,
    ScalingSettings,
    Snapshot,
    WorkerView,
    decide,
)
from .workload import FAIL_HANDLER, SNAPSHOT_HANDLER

if TYPE_CHECKING:
    from .cluster import RawCloudCluster

logger = logging.getLogger(__name__)

#: How much a new boot- or retire-time observation moves the estimate.
_EMA = 0.5


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class RawCloudAdaptive:
    """Scale each worker pool of ``cluster`` by the work waiting for it.

    Parameters
    ----------
    interval : str or float
        Time between ticks.
    target_duration : str or float
        Launch enough workers to finish the known work in about this long.
    budget : float, optional
        USD: stop launching once billed and committed cost would pass it.
    max_lifetime : str or float, optional
        Stop launching once the cluster is this old.
    boot_estimate : str or float
        Assumed boot time of a pool until one boot has been observed.
    idle_grace : str or float
        A worker idle for less than this is between tasks, not idle.
    unseen_share : float
        Work whose task duration no task has shown yet counts at this share
        of the scheduler's guess, so the first wave is smaller.
    """

    def __init__(
        self,
        cluster: RawCloudCluster,
        interval: str | float = "500ms",
        target_duration: str | float = "5s",
        budget: float | None = None,
        max_lifetime: str | float | None = None,
        boot_estimate: str | float = "5s",
        idle_grace: str | float = "500ms",
        unseen_share: float = 0.5,
    ):
        if not _is_number(unseen_share) or not 0 < unseen_share <= 1:
            raise InvalidRequest(
                f"unseen_share must be a number in (0, 1], got {unseen_share!r}: it is the "
                "share of the scheduler's guess that work of unseen duration counts for."
            )
        if budget is not None and (not _is_number(budget) or budget < 0):
            raise InvalidRequest(f"budget must be a number of USD >= 0, got {budget!r}.")
        self.cluster = cluster
        self.interval_s = parse_timedelta(interval)
        self.settings = ScalingSettings(
            target_duration_s=parse_timedelta(target_duration),
            idle_grace_s=parse_timedelta(idle_grace),
            retire_lead_s=max(1.0, 2 * self.interval_s),
            budget_usd=budget,
            max_lifetime_s=parse_timedelta(max_lifetime) if max_lifetime is not None else None,
            unseen_share=unseen_share,
        )
        self.boot_s = {name: parse_timedelta(boot_estimate) for name in cluster.pools}
        self.retire_s = {name: 1.0 for name in cluster.pools}
        self.log: deque[tuple[float, Any]] = deque(maxlen=1000)
        self.spent_usd = 0.0
        self._connected: set[str] = set()
        self._failed_groups: set[str] = set()
        self._started = time.time()
        self._busy = False
        self.periodic_callback = PeriodicCallback(self._tick, self.interval_s * 1000)
        # Started on the cluster's event loop: a sync cluster.adapt() is called
        # from another thread, whose own loop never runs.
        cluster.loop.add_callback(self.periodic_callback.start)

    def stop(self) -> None:
        self.cluster.loop.add_callback(self.periodic_callback.stop)

    async def _tick(self) -> None:
        if self._busy:  # a slow tick (graceful retirement) is never run twice at once
            return
        self._busy = True
        try:
            await self.step()
        except Exception as e:  # the scheduler may be closing; the next tick tries again
            logger.debug("adaptive tick failed: %s", e)
        finally:
            self._busy = False

    async def step(self) -> Decision:
        raw = await getattr(self.cluster.scheduler_comm, SNAPSHOT_HANDLER)()
        now = time.time()
        decision = decide(self.snapshot(raw, now), self.plans(), self.settings)
        await self.apply(decision, now)
        return decision

    def plans(self) -> list[PoolPlan]:
        return [
            PoolPlan(
                name=p.name,
                cpu=p.cpu,
                resources=dict(p.resources),
                minimum=p.minimum,
                maximum=p.maximum,
                billing=self.cluster.billing[p.name],
                boot_s=self.boot_s[p.name],
                retire_s=self.retire_s[p.name],
            )
            for p in self.cluster.pools.values()
        ]

    def snapshot(self, raw: dict, now: float) -> Snapshot:
        """Join the scheduler's view (who is connected, what waits) with the spec (who was launched)."""
        connected = {w["name"]: w for w in raw["workers"]}
        leaving = set(raw.get("leaving", ()))
        views = []
        for name, spec in self.cluster.worker_spec.items():
            pool = spec["options"]["pool"].name
            launched_at = self.cluster.launched_at(name) or now
            w = connected.get(name)
            if w is not None and name not in self._connected:
                self._connected.add(name)
                seen = now - launched_at
                self.boot_s[pool] = (1 - _EMA) * self.boot_s[pool] + _EMA * seen
            views.append(
                WorkerView(
                    name=name,
                    pool=pool,
                    launched_at=launched_at,
                    connected=w is not None,
                    processing=w["processing"] if w else 0,
                    idle_since=None if not w or w["idle_s"] is None else now - w["idle_s"],
                    bytes_held=w["bytes"] if w else 0,
                    leaving=name in leaving,
                )
            )
        work = tuple(
            GroupWork(g["tasks"], g["duration_s"], g["resources"], g["name"], g["seen"])
            for g in raw["groups"]
        )
        return Snapshot(now, work, tuple(views), self._started, self.spent_usd)

    async def apply(self, decision: Decision, now: float) -> None:
        for launch in decision.launches:
            self.cluster.add_workers(launch.pool, launch.count)
            self._record(now, launch)
        for hold in decision.holds:
            self._record(now, hold)
        for bad in decision.infeasible:
            if bad.group not in self._failed_groups:
                self._failed_groups.add(bad.group)
                message = (
                    f"{bad.tasks} task(s) of {bad.group!r} ask for resources {bad.resources}, "
                    f"which no worker pool provides (pools: {self._pool_resources()}). "
                    "Add a pool with those resources, or drop the annotation."
                )
                logger.error(message)
                self._record(now, bad)
                await getattr(self.cluster.scheduler_comm, FAIL_HANDLER)(
                    group=bad.group, message=message
                )
        if decision.retires:
            names = decision.retired
            for retire in decision.retires:
                self._record(now, retire)
                spec = self.cluster.worker_spec.get(retire.worker)
                if spec is not None:
                    billing = self.cluster.billing[retire.pool]
                    launched = self.cluster.launched_at(retire.worker) or now
                    self.spent_usd += billing.cost(billing.billed_s(launched, now))
                self._connected.discard(retire.worker)
            started = time.time()
            await self.cluster.retire(names)  # returns once their nodes have ended
            took = time.time() - started
            for pool in {r.pool for r in decision.retires}:
                self.retire_s[pool] = (1 - _EMA) * self.retire_s[pool] + _EMA * took
        if decision.launches:
            await self.cluster._correct_state()

    def _pool_resources(self) -> dict[str, dict[str, float]]:
        return {name: dict(p.resources) for name, p in self.cluster.pools.items()}

    def _record(self, now: float, entry: Any) -> None:
        self.log.append((now, entry))
        logger.info("adaptive: %s", entry)
