"""How many nodes to launch in each pool and which workers to retire, and why.

Pure: no I/O, no clock (``now`` comes in), nothing from distributed or any
cloud SDK. Its tests are tables of snapshot -> decision.

The rules, per pool:

- **From zero / up.** Enough workers to finish the pool's known work within
  ``target_duration_s``, never more than its tasks can keep busy, within the
  pool's minimum and maximum.
- **Unseen durations.** Until a task of a group has run, its duration is the
  scheduler's guess (0.5 s by default), which is as often ten times too long
  as too short. Such work counts at ``unseen_share`` of the guess: the first
  wave is smaller, and the rest follows on the tick after the first workers
  report what the tasks really take. Over-launching costs a billing minimum
  per node; under-launching costs one boot for the second wave.
- **No useless nodes.** Workers that would boot after the work they are for
  is done are not launched (cause TOO_LATE).
- **Down.** An idle worker of a pool with no waiting work is retired when the
  time already paid for it is about to end; until then it costs nothing to
  keep, and keeping it is what stops retire-then-relaunch thrash.
- **Whole cluster.** No launch past the budget (BUDGET) or the max lifetime
  (LIFETIME).
- **Leaving.** A worker with an interruption notice does not count: its
  replacement is launched at once (SPOT_NOTICE) while its data moves.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "Billing",
    "Cause",
    "Decision",
    "GroupWork",
    "Hold",
    "Infeasible",
    "Launch",
    "PoolPlan",
    "Retire",
    "ScalingSettings",
    "Snapshot",
    "WorkerView",
    "assign_work",
    "decide",
]


class Cause(str, enum.Enum):
    DEMAND = "demand"  # work is waiting that the pool's workers cannot finish in time
    MINIMUM = "minimum"  # the pool's minimum
    IDLE = "idle"  # idle, no work for its pool, and its paid time is ending
    TOO_LATE = "too-late"  # a new node would boot after the work is done
    BUDGET = "budget"
    LIFETIME = "lifetime"
    MAXIMUM = "maximum"  # the pool's maximum caps the launch
    INFEASIBLE = "infeasible"  # no pool provides the resources the work asks for
    SPOT_NOTICE = "spot-notice"
    CAPACITY_FALLBACK = "capacity-fallback"


@dataclass(frozen=True)
class Billing:
    """How a provider bills a node: per ``increment_s``, at least ``minimum_s``."""

    minimum_s: float = 0.0
    increment_s: float = 1.0
    price_per_hour: float = 0.0

    def paid_until(self, launched_at: float, now: float) -> float:
        """The end of the time already paid for (or committed to) at ``now``."""
        used = max(0.0, now - launched_at)
        billed = math.ceil(used / self.increment_s) * self.increment_s if self.increment_s else used
        return launched_at + max(self.minimum_s, billed)

    def billed_s(self, launched_at: float, ended_at: float) -> float:
        return self.paid_until(launched_at, ended_at) - launched_at

    def cost(self, seconds: float) -> float:
        return self.price_per_hour * seconds / 3600


@dataclass(frozen=True)
class PoolPlan:
    """What the policy needs to know of a pool."""

    name: str
    cpu: int = 1
    resources: dict[str, float] = field(default_factory=dict)
    minimum: int = 0
    maximum: float = math.inf
    billing: Billing = Billing()
    boot_s: float = 5.0  # observed (or assumed) launch-to-connected time
    retire_s: float = 1.0  # observed time from a retire decision to its node's end

    def provides(self, required: dict[str, float]) -> bool:
        return all(self.resources.get(r, 0) >= amount for r, amount in required.items())


@dataclass(frozen=True)
class GroupWork:
    """Waiting work of one task group: queued, processing or with no worker yet."""

    tasks: int
    duration_s: float  # expected compute time of one task
    resources: dict[str, float] = field(default_factory=dict)
    name: str = ""
    seen: bool = True  # False while duration_s is only the scheduler's guess


@dataclass(frozen=True)
class WorkerView:
    """A worker node: connected (``connected``) or launched and still booting."""

    name: str
    pool: str
    launched_at: float
    connected: bool = True
    processing: int = 0
    idle_since: float | None = None  # None while it has work
    bytes_held: int = 0
    leaving: bool = False  # an interruption notice: it ends soon, whatever we decide


@dataclass(frozen=True)
class Snapshot:
    now: float
    work: tuple[GroupWork, ...] = ()
    workers: tuple[WorkerView, ...] = ()
    cluster_started: float = 0.0
    spent_usd: float = 0.0  # billed so far for nodes already terminated


@dataclass(frozen=True)
class ScalingSettings:
    target_duration_s: float = 5.0
    idle_grace_s: float = 0.5  # idle at least this long: a gap between tasks is not idleness
    retire_lead_s: float = 1.0  # slack for the tick: retire this long plus the pool's retire_s early
    unseen_share: float = 0.5  # work of unseen duration counts at this share of the guess
    budget_usd: float | None = None
    max_lifetime_s: float | None = None


@dataclass(frozen=True)
class Launch:
    pool: str
    count: int
    cause: Cause
    detail: str = ""


@dataclass(frozen=True)
class Retire:
    worker: str
    pool: str
    cause: Cause
    detail: str = ""


@dataclass(frozen=True)
class Hold:
    """Launches the policy wanted but withheld, and why."""

    pool: str
    count: int
    cause: Cause
    detail: str = ""


@dataclass(frozen=True)
class Infeasible:
    group: str
    tasks: int
    resources: dict[str, float]
    cause: Cause = Cause.INFEASIBLE


@dataclass(frozen=True)
class Decision:
    launches: tuple[Launch, ...] = ()
    retires: tuple[Retire, ...] = ()
    holds: tuple[Hold, ...] = ()
    infeasible: tuple[Infeasible, ...] = ()

    def launch_count(self, pool: str) -> int:
        return sum(launch.count for launch in self.launches if launch.pool == pool)

    @property
    def retired(self) -> list[str]:
        return [r.worker for r in self.retires]


@dataclass
class _PoolWork:
    tasks: int = 0
    work_s: float = 0.0  # expected: seen durations in full, guessed ones at their share


def default_pool(pools: Sequence[PoolPlan]) -> PoolPlan:
    """Unrestricted work goes to the first pool that offers no special resources."""
    return next((p for p in pools if not p.resources), pools[0])


def assign_work(
    work: Sequence[GroupWork], pools: Sequence[PoolPlan], unseen_share: float
) -> tuple[dict[str, _PoolWork], list[Infeasible]]:
    """Each group's work counts toward the first pool that provides its resources."""
    by_pool = {p.name: _PoolWork() for p in pools}
    infeasible = []
    fallback = default_pool(pools)
    for g in work:
        pool = fallback if not g.resources else next((p for p in pools if p.provides(g.resources)), None)
        if pool is None:
            infeasible.append(Infeasible(g.name, g.tasks, dict(g.resources)))
            continue
        w = by_pool[pool.name]
        w.tasks += g.tasks
        w.work_s += g.tasks * g.duration_s * (1.0 if g.seen else unseen_share)
    return by_pool, infeasible


def _wanted(pool: PoolPlan, work: _PoolWork, target_duration_s: float) -> int:
    if work.tasks == 0:
        return pool.minimum
    by_time = math.ceil(work.work_s / (pool.cpu * target_duration_s))
    by_tasks = math.ceil(work.tasks / pool.cpu)  # more would sit idle
    return int(min(max(pool.minimum, 1, min(by_time, by_tasks)), pool.maximum))


def _too_late(pool: PoolPlan, work: _PoolWork, workers: list[WorkerView], count: int) -> int:
    """How many of ``count`` new nodes would still find work when they boot."""
    threads = pool.cpu * sum(1 for w in workers if w.connected)
    if threads == 0:
        return count  # nothing runs the work: every node is useful
    # The work left when a new node connects, spread over the nodes there by then.
    remaining_s = work.work_s - threads * pool.boot_s
    if remaining_s <= 0:
        return 0
    return min(count, max(0, math.ceil(remaining_s / (pool.cpu * max(pool.boot_s, 1e-9)))))


def _committed_usd(pools: dict[str, PoolPlan], snap: Snapshot) -> float:
    """Billed so far plus what live nodes are already committed to."""
    total = snap.spent_usd
    for w in snap.workers:
        billing = pools[w.pool].billing
        total += billing.cost(billing.paid_until(w.launched_at, snap.now) - w.launched_at)
    return total


def decide(snap: Snapshot, pools: Sequence[PoolPlan], settings: ScalingSettings) -> Decision:
    """The launches and retirements for this tick, each with its cause."""
    by_name = {p.name: p for p in pools}
    work, infeasible = assign_work(snap.work, pools, settings.unseen_share)
    launches: list[Launch] = []
    holds: list[Hold] = []
    retires: list[Retire] = []
    committed = _committed_usd(by_name, snap)
    expired = (
        settings.max_lifetime_s is not None
        and snap.now - snap.cluster_started >= settings.max_lifetime_s
    )

    for pool in pools:
        w = work[pool.name]
        everyone = [x for x in snap.workers if x.pool == pool.name]
        workers = [x for x in everyone if not x.leaving]
        wanted = _wanted(pool, w, settings.target_duration_s)
        missing = wanted - len(workers)
        if missing > 0:
            cause = Cause.DEMAND if w.tasks else Cause.MINIMUM
            if len(everyone) >= wanted:  # short only of the workers that were given notice
                cause = Cause.SPOT_NOTICE
            useful = (missing if cause in (Cause.MINIMUM, Cause.SPOT_NOTICE)
                      else _too_late(pool, w, workers, missing))
            if useful < missing:
                holds.append(Hold(pool.name, missing - useful, Cause.TOO_LATE,
                                  f"work done within {pool.boot_s:.1f}s boot time"))
            if useful and expired:
                holds.append(Hold(pool.name, useful, Cause.LIFETIME))
                useful = 0
            if useful and settings.budget_usd is not None:
                each = pool.billing.cost(max(pool.billing.minimum_s, pool.boot_s))
                affordable = useful if each <= 0 else int((settings.budget_usd - committed) // each)
                affordable = max(0, min(useful, affordable))
                if affordable < useful:
                    holds.append(Hold(pool.name, useful - affordable, Cause.BUDGET,
                                      f"${committed:.4f} of ${settings.budget_usd:.4f} committed"))
                committed += affordable * max(each, 0)
                useful = affordable
            if useful:
                launches.append(Launch(pool.name, useful, cause,
                                       f"{w.tasks} tasks, {w.work_s:.1f}s of work"))
        if w.tasks == 0:
            retires.extend(_retirements(pool, workers, snap.now, settings))
    return Decision(tuple(launches), tuple(retires), tuple(holds), tuple(infeasible))


def _retirements(
    pool: PoolPlan, workers: list[WorkerView], now: float, settings: ScalingSettings
) -> list[Retire]:
    """Idle workers whose paid time is ending, least data first, above the minimum."""
    keep = pool.minimum
    candidates = []
    for w in workers:
        if not w.connected or w.processing or w.idle_since is None or w.leaving:
            continue
        if now - w.idle_since < settings.idle_grace_s:
            continue
        left = pool.billing.paid_until(w.launched_at, now) - now
        # Started this early, the node ends before the next billing increment.
        if left <= settings.retire_lead_s + pool.retire_s:
            candidates.append((w.bytes_held, w.name))
    room = max(0, len(workers) - keep)
    return [
        Retire(name, pool.name, Cause.IDLE, "idle, no work for its pool, paid time ending")
        for _, name in sorted(candidates)[:room]
    ]
