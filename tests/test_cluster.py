"""RawCloudCluster on the local provider, with real schedulers, workers and processes."""

from __future__ import annotations

import dask.array as da
import dask.dataframe as dd
import pandas as pd
import pytest
from distributed import Client

from dask_rawcloud import RawCloudCluster
from dask_rawcloud.providers.local import node_processes
import tasks
from poll import wait_for, wait_until

pytestmark = pytest.mark.timeout(90)


def connected(cluster) -> dict[str, dict]:
    """Connected workers by name, as the cluster's live worker-status stream reports them."""
    return {w["name"]: w for w in cluster.scheduler_info["workers"].values()}


def test_computes_real_results_and_leaves_nothing(state_dir):
    with RawCloudCluster(n_workers=2, worker_cpu=1, worker_memory="1GiB") as cluster:
        name = cluster.name
        assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=60)
            x = da.arange(1_000_000, chunks=100_000)
            assert client.compute(x.sum()).result() == 999_999 * 1_000_000 // 2
            df = pd.DataFrame({"k": [i % 7 for i in range(7000)], "v": range(7000)})
            got = dd.from_pandas(df, npartitions=8).groupby("k").v.sum().compute()
            pd.testing.assert_series_equal(got.sort_index(), df.groupby("k").v.sum())
            names = sorted(w["name"] for w in client.scheduler_info()["workers"].values())
            assert names == sorted(cluster.worker_spec) == ["default-0", "default-1"]
            assert all(w["nthreads"] == 1 for w in client.scheduler_info()["workers"].values())
        assert (state_dir / name / "cluster.json").exists()
    assert not node_processes(name)
    assert not (state_dir / name).exists()


async def test_scale_up_then_to_zero_in_one_launch_call():
    async with RawCloudCluster(asynchronous=True) as cluster:
        async with Client(cluster, asynchronous=True) as client:
            cluster.scale(3)
            await client.wait_for_workers(3, timeout=60)
            workers = [n for n in await cluster.nodes() if n.role == "worker"]
            assert len(workers) == 3
            # The scheduler, then all three workers in one batched provider call.
            assert cluster.launcher.calls["launch"] == 2

            cluster.scale(0)
            await wait_for(lambda: not connected(cluster), 30, "zero workers")

            async def no_worker_nodes():
                return not [n for n in await cluster.nodes() if n.role == "worker"]

            await wait_for(no_worker_nodes, 30, "worker nodes to end")
            # Only the scheduler's agent is left running.
            assert len(node_processes(cluster.name)) == 1


async def test_adapt_scales_from_zero_on_a_burst_and_back_to_zero():
    async with RawCloudCluster(asynchronous=True) as cluster:
        cluster.adapt(minimum=0, maximum=4, interval="200ms")
        async with Client(cluster, asynchronous=True) as client:
            assert not connected(cluster)
            futures = client.map(tasks.slow_inc, range(24))
            await wait_for(lambda: connected(cluster), 60, "adapt to add workers")
            assert await client.gather(futures) == list(range(1, 25))
            peak = len(cluster.worker_spec)
            assert 1 <= peak <= 4
            del futures
            await wait_for(lambda: not cluster.worker_spec, 30, "adapt to retire every worker")

            async def no_worker_processes():
                nodes = await cluster.nodes()
                return not [n for n in nodes if n.role == "worker"] and len(
                    node_processes(cluster.name)
                ) == 1

            await wait_for(no_worker_processes, 30, "worker processes to end")


async def test_adaptive_scale_down_retires_the_idle_workers_by_name():
    """Spec keys equal worker names, so the workers retired are the idle ones."""
    async with RawCloudCluster(n_workers=2, asynchronous=True) as cluster:
        async with Client(cluster, asynchronous=True) as client:
            await client.wait_for_workers(2, timeout=60)
            busy_name = "default-0"
            busy_addr = next(
                a for a, w in cluster.scheduler_info["workers"].items() if w["name"] == busy_name
            )
            # Data that lives only on default-0 makes it the one to keep.
            held = client.submit(tasks.payload, 1000, workers=[busy_addr], pure=False)
            await held
            to_close = await client.scheduler.workers_to_close(n=1, attribute="name")
            assert list(to_close) == ["default-1"]
            await cluster.scale_down(to_close)
            await wait_for(lambda: len(connected(cluster)) == 1, 30, "one worker")
            assert list(connected(cluster)) == [busy_name]
            assert await held == b"x" * 1000


def test_names_are_never_reused(state_dir):
    with RawCloudCluster(n_workers=1) as cluster:
        cluster.scale(0)
        cluster.scale(2)
        assert sorted(cluster.worker_spec) == ["default-1", "default-2"]
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=60)
            wait_until(lambda: not [n for n in cluster.sync(cluster.nodes) if n.name == "default-0"],
                       30, "default-0 to end")


@pytest.mark.timeout(60)
async def test_workers_without_a_nanny_run_one_process_per_node():
    import dask

    with dask.config.set({"rawcloud.worker.nanny": False}):
        async with RawCloudCluster(n_workers=2, asynchronous=True) as cluster:
            async with Client(cluster, asynchronous=True) as client:
                await client.wait_for_workers(2, timeout=60)
                assert await client.submit(tasks.slow_inc, 1, seconds=0) == 2
                assert len(node_processes(cluster.name)) == 3  # scheduler + two workers
                cluster.scale(0)
                await wait_for(lambda: len(node_processes(cluster.name)) == 1, 30, "workers to end")


def test_adapt_from_a_script_scales_up_and_back_to_zero():
    # The synchronous form users write in scripts and notebooks: adapt() is
    # called from this thread while the cluster's event loop runs in another.
    with RawCloudCluster() as cluster, Client(cluster) as client:
        cluster.adapt(minimum=0, maximum=2, interval="200ms")
        futures = client.map(tasks.slow_inc, range(6), seconds=0.5)
        assert client.gather(futures) == list(range(1, 7))
        del futures
        wait_until(lambda: not cluster.worker_spec, 30, "the pool back to zero")
        wait_until(lambda: len(node_processes(cluster.name)) == 1, 30, "worker nodes ended")
