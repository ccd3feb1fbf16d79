"""0 -> N connected workers -> 0 on this machine, and the cost of one adaptive tick.

    python benchmarks/scale.py [--workers 200] [--json PATH]

Workers are made light by running each without a Nanny (rawcloud.worker.nanny
false): one process per node, whose memory is reported. The tick is timed in
its two parts, at 500 workers and up to 100k waiting tasks:
- the scheduler-side snapshot (WorkloadPlugin.snapshot) on a real Scheduler;
- the pure policy (policy.scaling.decide).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import statistics
import tempfile
import time

os.environ["DASK_RAWCLOUD__STATE_DIR"] = tempfile.mkdtemp(prefix="rawcloud-bench-")

import dask.config  # noqa: E402
from distributed import Client, Scheduler  # noqa: E402

from dask_rawcloud import RawCloudCluster  # noqa: E402
from dask_rawcloud.policy.scaling import (  # noqa: E402
    GroupWork,
    PoolPlan,
    ScalingSettings,
    Snapshot,
    WorkerView,
    decide,
)
from dask_rawcloud.providers.local import node_processes  # noqa: E402
from dask_rawcloud.workload import WorkloadPlugin  # noqa: E402


async def up_and_down(n: int) -> dict:
    config = {"rawcloud.worker.nanny": False, "rawcloud.worker.memory": "256MiB",
              "rawcloud.scheduler.dashboard": False, "rawcloud.boot-timeout": "120s"}
    with dask.config.set(config):
        async with RawCloudCluster(asynchronous=True, silence_logs="error") as cluster:
            scheduler_tag = f"{cluster.name}/{cluster.scheduler.node.id}"
            async with Client(cluster, asynchronous=True) as client:
                start = time.monotonic()
                cluster.scale(n)
                await client.wait_for_workers(n, timeout=600)
                up_s = time.monotonic() - start
                procs = [p for p in node_processes(cluster.name)
                         if p.environ().get("DASK_RAWCLOUD_NODE") != scheduler_tag]
                rss = [p.memory_info().rss for p in procs]
                peak = len(cluster.scheduler_info["workers"])
                assert await client.submit(sum, range(10)) == 45
                start = time.monotonic()
                cluster.scale(0)
                while len(node_processes(cluster.name)) > 1:
                    await asyncio.sleep(0.1)
                down_s = time.monotonic() - start
            calls = dict(cluster.launcher.calls)
    return {
        "peak_workers": peak,
        "up_s": round(up_s, 2),
        "down_s": round(down_s, 2),
        "node_processes": len(procs),
        "rss_per_node_mib": round(statistics.mean(rss) / 2**20, 1),
        "provider_calls": calls,
    }


async def snapshot_cost(workers: int, tasks: int, repeat: int = 50) -> float:
    """ms per snapshot on a real Scheduler holding ``tasks`` waiting tasks and ``workers``
    worker records (records only: 500 worker processes do not fit this machine)."""
    async with Scheduler(dashboard_address=":0", port=0) as s:
        plugin = WorkloadPlugin()
        s.add_plugin(plugin)
        await plugin.start(s)
        async with Client(s.address, asynchronous=True) as c:
            # Tasks no worker can run (they ask for a resource nobody has) stay waiting.
            futures = c.map(lambda x: x, range(tasks), resources={"NONE": 1}, key="wait")
            while sum(tg.states["no-worker"] for tg in s.task_groups.values()) < tasks:
                await asyncio.sleep(0.05)
            _fake_workers(s, workers)
            start = time.perf_counter()
            for _ in range(repeat):
                snap = plugin.snapshot()
            elapsed = (time.perf_counter() - start) / repeat * 1000
            assert sum(g["tasks"] for g in snap["groups"]) == tasks
            assert len(snap["workers"]) == workers
            s.workers.clear()  # fake records; closing the scheduler releases the tasks
    return elapsed


def _fake_workers(s: Scheduler, n: int) -> None:
    """Worker records in the scheduler's table, as the snapshot reads them."""
    from types import SimpleNamespace

    for i in range(n):
        address = f"tcp://127.0.0.1:{20000 + i}"
        s.workers[address] = SimpleNamespace(
            address=address, name=f"cpu-{i}", nthreads=1, processing=set(), nbytes=0
        )


def policy_cost(workers: int, tasks: int, repeat: int = 200) -> float:
    pool = PoolPlan("cpu", maximum=1000)
    snap = Snapshot(
        now=1000.0,
        work=tuple(GroupWork(tasks // 4, 0.1, {}, f"g{i}") for i in range(4)),
        workers=tuple(WorkerView(f"cpu-{i}", "cpu", 0.0, processing=1) for i in range(workers)),
    )
    start = time.perf_counter()
    for _ in range(repeat):
        decide(snap, [pool], ScalingSettings())
    return (time.perf_counter() - start) / repeat * 1000


def main() -> None:
    import logging

    logging.getLogger("distributed").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args()
    out: dict = {"machine": {"cpus": os.cpu_count()}}
    ticks = {}
    for tasks in (1_000, 10_000, 100_000):
        snap_ms = asyncio.run(snapshot_cost(500, tasks))
        pol_ms = policy_cost(500, tasks)
        ticks[tasks] = {"snapshot_ms": round(snap_ms, 3), "policy_ms": round(pol_ms, 3)}
        print(f"tick at 500 workers, {tasks:>7,} waiting tasks: snapshot {snap_ms:.3f} ms, "
              f"policy {pol_ms:.3f} ms", flush=True)
    out["tick_ms"] = round(sum(ticks[100_000].values()), 3)
    out["tick_by_tasks"] = ticks
    result = asyncio.run(up_and_down(args.workers))
    out.update(result)
    print(f"0 -> {result['peak_workers']} connected workers in {result['up_s']} s, "
          f"-> 0 node processes in {result['down_s']} s; one process per node, "
          f"{result['rss_per_node_mib']} MiB each; provider calls {result['provider_calls']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
