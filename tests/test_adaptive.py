"""RawCloudAdaptive on real local clusters: pools, budget, impossible work, graceful retirement."""

from __future__ import annotations

import dask
import pytest
from distributed import Client
from distributed.deploy import Adaptive

from dask_rawcloud import InfeasibleRequest, RawCloudCluster, WorkerPool
from dask_rawcloud.policy.scaling import Cause, Hold, Launch
from dask_rawcloud.providers.local import node_processes
import tasks
from poll import wait_for

pytestmark = pytest.mark.timeout(90)


def pools_launched(cluster) -> set[str]:
    return {e.pool for _, e in cluster.adaptive_log if isinstance(e, Launch)}


async def test_burst_from_zero_and_back_with_causes():
    async with RawCloudCluster(asynchronous=True) as cluster:
        cluster.adapt(minimum=0, maximum=3, interval="200ms")
        async with Client(cluster, asynchronous=True) as client:
            futures = client.map(tasks.slow_inc, range(12), seconds=1.0)
            assert await client.gather(futures) == list(range(1, 13))
            del futures
            await wait_for(lambda: not cluster.worker_spec, 30, "the pool to retire to zero")
            await wait_for(lambda: len(node_processes(cluster.name)) == 1, 30, "worker nodes to end")
        causes = {type(e).__name__: e.cause for _, e in cluster.adaptive_log if hasattr(e, "cause")}
        assert causes["Launch"] is Cause.DEMAND
        assert causes["Retire"] is Cause.IDLE
        launched = sum(e.count for _, e in cluster.adaptive_log if isinstance(e, Launch))
        assert 1 <= launched <= 3


async def test_only_the_gpu_pool_grows_for_gpu_tasks():
    pools = [WorkerPool("cpu", maximum=2), WorkerPool("gpu", resources={"GPU": 1}, maximum=2)]
    async with RawCloudCluster(pools=pools, asynchronous=True) as cluster:
        cluster.adapt(interval="200ms")
        async with Client(cluster, asynchronous=True) as client:
            gpu = client.map(tasks.slow_inc, range(4), seconds=0.5, resources={"GPU": 1})
            assert await client.gather(gpu) == [1, 2, 3, 4]
            assert pools_launched(cluster) == {"gpu"}
            names = {w["name"] for w in cluster.scheduler_info["workers"].values()}
            assert names and all(n.startswith("gpu-") for n in names)
            # Plain work then grows the CPU pool, not the GPU one.
            del gpu
            await wait_for(lambda: not cluster.worker_spec, 30, "the GPU pool to retire")
            plain = client.map(tasks.slow_inc, range(4), seconds=0.5, key="plain")
            assert await client.gather(plain) == [1, 2, 3, 4]
            after = [e.pool for _, e in cluster.adaptive_log if isinstance(e, Launch)]
            assert after[-1] == "cpu" and after.count("gpu") >= 1


async def test_budget_stops_launches():
    # $36/h is $0.01 a second; with a 10 s minimum each launch commits $0.10.
    with dask.config.set({"rawcloud.local.billing.price-per-hour": 36.0,
                          "rawcloud.local.billing.minimum": "10s"}):
        async with RawCloudCluster(asynchronous=True) as cluster:
            cluster.adapt(minimum=0, maximum=8, interval="200ms", budget=0.25)
            async with Client(cluster, asynchronous=True) as client:
                futures = client.map(tasks.slow_inc, range(40), seconds=1.0)
                await wait_for(
                    lambda: any(isinstance(e, Hold) and e.cause is Cause.BUDGET
                                for _, e in cluster.adaptive_log),
                    30, "the budget to hold launches back",
                )
                assert len(cluster.worker_spec) == 2
                await client.cancel(futures)


async def test_impossible_resources_fail_fast_instead_of_hanging():
    async with RawCloudCluster(asynchronous=True) as cluster:
        cluster.adapt(minimum=0, maximum=2, interval="200ms")
        async with Client(cluster, asynchronous=True) as client:
            future = client.submit(tasks.slow_inc, 1, resources={"TPU": 1})
            with pytest.raises(InfeasibleRequest, match=r"TPU.*no worker pool provides"):
                await future
            assert not cluster.worker_spec


async def test_retirement_moves_held_data_before_the_node_ends():
    async with RawCloudCluster(n_workers=2, asynchronous=True) as cluster:
        async with Client(cluster, asynchronous=True) as client:
            await client.wait_for_workers(2, timeout=60)
            addr = next(a for a, w in cluster.scheduler_info["workers"].items() if w["name"] == "default-0")
            held = client.submit(tasks.payload, 10_000, workers=[addr], pure=False)
            await held
            await cluster.retire(["default-0"])
            await wait_for(
                lambda: [w["name"] for w in cluster.scheduler_info["workers"].values()] == ["default-1"],
                30, "default-0 to leave",
            )
            # Still in memory, on the other worker: nothing was recomputed.
            where = await client.who_has(held)
            assert list(where.values()) == [(next(iter(cluster.scheduler_info["workers"])),)]
            assert await held == b"x" * 10_000


async def test_stock_adaptive_still_scales_the_cluster():
    # distributed's Adaptive reads cluster.plan as SpecCluster's set of planned
    # workers, while RawCloudCluster.plan(...) prices a request: both must hold.
    async with RawCloudCluster(asynchronous=True) as cluster:
        adaptive = cluster.adapt(Adaptive=Adaptive, minimum=0, maximum=2, interval="200ms")
        assert type(adaptive) is Adaptive
        async with Client(cluster, asynchronous=True) as client:
            futures = client.map(tasks.slow_inc, range(6), seconds=0.5)
            assert await client.gather(futures) == list(range(1, 7))
            assert cluster.plan <= set(cluster.worker_spec)
            del futures
            await wait_for(lambda: not cluster.worker_spec, 30, "stock Adaptive to scale to zero")
    assert callable(RawCloudCluster.plan)
