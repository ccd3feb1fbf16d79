"""The scaling policy as tables: snapshot in, decision out. No scheduler, no cloud."""

from __future__ import annotations

import ast
import pathlib

import pytest

from dask_rawcloud.policy.scaling import (
    Billing,
    Cause,
    GroupWork,
    PoolPlan,
    ScalingSettings,
    Snapshot,
    WorkerView,
    decide,
)

CPU = PoolPlan("cpu", cpu=1, maximum=8, boot_s=2.0)
GPU = PoolPlan("gpu", cpu=1, resources={"GPU": 1}, maximum=2, boot_s=2.0)
PER_MINUTE = Billing(minimum_s=60, increment_s=1, price_per_hour=3.6)  # $0.001 a second
SETTINGS = ScalingSettings(target_duration_s=5, idle_grace_s=0.5, retire_lead_s=1)


def work(tasks, seconds, name="g", **resources):
    return GroupWork(tasks, seconds, resources, name)


def idle(name, pool="cpu", launched=0.0, since=0.0, nbytes=0):
    return WorkerView(name, pool, launched, idle_since=since, bytes_held=nbytes)


def busy(name, pool="cpu", launched=0.0, processing=1):
    return WorkerView(name, pool, launched, processing=processing)


def booting(name, pool="cpu", launched=0.0):
    return WorkerView(name, pool, launched, connected=False)


@pytest.mark.parametrize(
    "snapshot, expected",
    [
        # Nothing to do.
        (Snapshot(now=10), {}),
        # From zero: 40 s of work in 5 s needs 8 workers...
        (Snapshot(10, work=(work(200, 0.2),)), {"cpu": 8}),
        # ...but 3 tasks can only keep 3 workers busy...
        (Snapshot(10, work=(work(3, 30.0),)), {"cpu": 3}),
        # ...and a little work still gets one worker.
        (Snapshot(10, work=(work(1, 0.01),)), {"cpu": 1}),
        # Never past the pool's maximum.
        (Snapshot(10, work=(work(1000, 1.0),)), {"cpu": 8}),
        # Booting workers count: nothing more is launched for them.
        (Snapshot(10, work=(work(10, 1.0),), workers=(booting("cpu-0"), booting("cpu-1"))), {}),
    ],
)
def test_launches_from_demand(snapshot, expected):
    decision = decide(snapshot, [CPU], SETTINGS)
    assert {launch.pool: launch.count for launch in decision.launches} == expected
    assert all(launch.cause is Cause.DEMAND for launch in decision.launches)
    assert decision.retires == ()


def test_unseen_durations_launch_a_first_wave_then_the_rest():
    # 40 tasks no one has run: the 0.5 s guess says 20 s of work, 4 workers in 5 s;
    # at half the guess, a first wave of 2.
    unseen = GroupWork(40, 0.5, {}, "g", seen=False)
    first = decide(Snapshot(10, work=(unseen,)), [CPU], SETTINGS)
    assert [(launch.count, launch.cause) for launch in first.launches] == [(2, Cause.DEMAND)]
    # The first tasks ran and take 1 s: 40 s of work wants 8, and 6 more follow at once.
    seen = Snapshot(16, work=(work(38, 1.0),), workers=(busy("cpu-0", launched=10),
                                                        busy("cpu-1", launched=10)))
    assert decide(seen, [CPU], SETTINGS).launch_count("cpu") == 6
    # Had they taken 50 ms, 2 s of work is done before another node boots: nothing more.
    short = Snapshot(16, work=(work(38, 0.05),), workers=(busy("cpu-0", launched=10),
                                                          busy("cpu-1", launched=10)))
    assert decide(short, [CPU], SETTINGS).launches == ()
    # unseen_share=1 trusts the guess, as distributed's Adaptive does.
    trusting = ScalingSettings(target_duration_s=5, unseen_share=1.0)
    assert decide(Snapshot(10, work=(unseen,)), [CPU], trusting).launch_count("cpu") == 4


def test_no_node_that_would_boot_after_the_work_is_done():
    # 2 connected workers hold 3 s of work: done in 1.5 s, before a 2 s boot.
    snap = Snapshot(10, work=(work(6, 0.5),), workers=(busy("cpu-0"), busy("cpu-1")))
    decision = decide(snap, [CPU], ScalingSettings(target_duration_s=0.5))
    assert decision.launches == ()
    assert [(h.pool, h.cause) for h in decision.holds] == [("cpu", Cause.TOO_LATE)]
    # With 60 s of work left, more workers are worth their boot.
    snap = Snapshot(10, work=(work(120, 0.5),), workers=(busy("cpu-0"), busy("cpu-1")))
    assert decide(snap, [CPU], SETTINGS).launch_count("cpu") == 6


def test_work_goes_only_to_pools_that_provide_its_resources():
    snap = Snapshot(10, work=(work(4, 5.0, "gpu-task", GPU=1), work(100, 0.1, "plain")))
    decision = decide(snap, [CPU, GPU], SETTINGS)
    assert {launch.pool: launch.count for launch in decision.launches} == {"cpu": 2, "gpu": 2}
    # Only GPU work: the CPU pool stays at zero.
    decision = decide(Snapshot(10, work=(work(1, 1.0, GPU=1),)), [CPU, GPU], SETTINGS)
    assert {launch.pool: launch.count for launch in decision.launches} == {"gpu": 1}


def test_unrestricted_work_never_launches_a_gpu_node():
    decision = decide(Snapshot(10, work=(work(50, 1.0),)), [GPU, CPU], SETTINGS)
    assert decision.launch_count("gpu") == 0
    assert decision.launch_count("cpu") == 8


def test_work_no_pool_can_run_is_reported_not_launched_for():
    decision = decide(Snapshot(10, work=(work(5, 1.0, "tpu-task", TPU=1),)), [CPU, GPU], SETTINGS)
    assert decision.launches == ()
    (bad,) = decision.infeasible
    assert (bad.group, bad.tasks, bad.resources, bad.cause) == ("tpu-task", 5, {"TPU": 1}, Cause.INFEASIBLE)


@pytest.mark.parametrize(
    "billing, worker, now, retired",
    [
        # Free billing: idle past the grace, retired at once.
        (Billing(), idle("cpu-0", since=9.0), 10.0, ["cpu-0"]),
        # Idle for less than the grace: a gap between tasks, kept.
        (Billing(), idle("cpu-0", since=9.8), 10.0, []),
        # 60 s minimum, launched at 0: paid until 60, kept at 30...
        (PER_MINUTE, idle("cpu-0", since=20.0), 30.0, []),
        # ...and retired when the paid time is about to end.
        (PER_MINUTE, idle("cpu-0", since=20.0), 59.2, ["cpu-0"]),
        # Past the minimum, per-second billing: retired as soon as idle.
        (PER_MINUTE, idle("cpu-0", since=70.0), 75.3, ["cpu-0"]),
        # A busy worker is never retired.
        (Billing(), busy("cpu-0"), 10.0, []),
        # A booting worker is left to boot.
        (Billing(), booting("cpu-0"), 10.0, []),
    ],
)
def test_retires_idle_workers_when_paid_time_ends(billing, worker, now, retired):
    pool = PoolPlan("cpu", billing=billing)
    decision = decide(Snapshot(now, workers=(worker,)), [pool], SETTINGS)
    assert decision.retired == retired
    assert all(r.cause is Cause.IDLE for r in decision.retires)


def test_a_slow_retirement_starts_early_enough_to_end_inside_the_paid_time():
    # Retiring this pool's nodes has taken 3 s: started at 56.5, the node ends
    # before 60, not in the next billed second.
    slow = PoolPlan("cpu", billing=PER_MINUTE, retire_s=3.0)
    worker = (idle("cpu-0", since=20.0),)
    assert decide(Snapshot(55.5, workers=worker), [slow], SETTINGS).retired == []
    assert decide(Snapshot(56.5, workers=worker), [slow], SETTINGS).retired == ["cpu-0"]


def test_no_retirement_while_its_pool_has_work():
    snap = Snapshot(100, work=(work(1, 1.0),), workers=(idle("cpu-0", since=0), busy("cpu-1")))
    assert decide(snap, [CPU], SETTINGS).retires == ()


def test_retirement_keeps_the_minimum_and_the_workers_holding_most_data():
    pool = PoolPlan("cpu", minimum=1)
    workers = (idle("cpu-0", nbytes=10), idle("cpu-1", nbytes=10_000), idle("cpu-2", nbytes=0))
    decision = decide(Snapshot(10, workers=workers), [pool], SETTINGS)
    assert decision.retired == ["cpu-2", "cpu-0"]


def test_minimum_launches_without_work():
    decision = decide(Snapshot(10), [PoolPlan("cpu", minimum=2)], SETTINGS)
    assert [(launch.count, launch.cause) for launch in decision.launches] == [(2, Cause.MINIMUM)]


def test_no_thrash_a_gap_inside_the_billing_minimum_keeps_workers():
    """Work ends, a gap shorter than the paid time, work again: nothing retired or relaunched."""
    pool = PoolPlan("cpu", maximum=4, billing=PER_MINUTE)
    workers = tuple(idle(f"cpu-{i}", since=12.0) for i in range(4))
    for now in (13, 20, 40, 55):  # the gap
        assert decide(Snapshot(now, workers=workers), [pool], SETTINGS) .retires == ()
    again = Snapshot(56, work=(work(40, 0.5),), workers=workers)
    assert decide(again, [pool], SETTINGS).launches == ()


def test_budget_stops_launches():
    pool = PoolPlan("cpu", maximum=10, billing=PER_MINUTE)  # each launch commits $0.06
    settings = ScalingSettings(budget_usd=0.2)
    decision = decide(Snapshot(10, work=(work(100, 1.0),)), [pool], settings)
    assert decision.launch_count("cpu") == 3
    assert [(h.count, h.cause) for h in decision.holds] == [(7, Cause.BUDGET)]
    # Already spent: nothing more.
    spent = Snapshot(10, work=(work(100, 1.0),), spent_usd=0.2)
    assert decide(spent, [pool], settings).launches == ()


def test_max_lifetime_stops_launches():
    settings = ScalingSettings(max_lifetime_s=60)
    snap = Snapshot(61, work=(work(10, 1.0),), cluster_started=0)
    decision = decide(snap, [CPU], settings)
    assert decision.launches == ()
    assert [h.cause for h in decision.holds] == [Cause.LIFETIME]
    assert decide(Snapshot(59, work=(work(10, 1.0),)), [CPU], settings).launch_count("cpu") == 2


@pytest.mark.parametrize(
    "launched, now, paid_until",
    [(0, 0, 60), (0, 59.5, 60), (0, 60, 60), (0, 60.2, 61), (0, 100.0, 100), (10, 95.5, 96)],
)
def test_billing_per_second_with_a_minute_minimum(launched, now, paid_until):
    assert PER_MINUTE.paid_until(launched, now) == paid_until


def test_policy_is_pure():
    """No I/O, no clock, nothing from distributed or a cloud SDK."""
    source = pathlib.Path(__file__).parents[1] / "dask_rawcloud" / "policy" / "scaling.py"
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"__future__", "enum", "math", "collections", "dataclasses", "typing"}
