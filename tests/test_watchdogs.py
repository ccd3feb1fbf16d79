"""No machine outlives its purpose: the scheduler's watchdogs, with real processes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap

import pytest
from distributed import Client

from dask_rawcloud import RawCloudCluster
from dask_rawcloud.manage import remove_cluster, state_dir
from dask_rawcloud.providers.local import node_processes
from dask_rawcloud.watchdog import Expiry, check_interval_s
from poll import wait_for

OWNER = textwrap.dedent(
    """
    import sys, time
    from dask_rawcloud import RawCloudCluster
    cluster = RawCloudCluster(n_workers=1, name=sys.argv[1], no_client_timeout="3s")
    from distributed import Client
    client = Client(cluster)
    client.wait_for_workers(1, timeout=60)
    client.close()  # only the cluster object is left to keep it alive
    print("ready", flush=True)
    time.sleep(600)
    """
)


@pytest.mark.timeout(90)
async def test_nodes_end_when_the_client_process_is_killed():
    name = "killed-owner"
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, name], stdout=subprocess.PIPE, text=True
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(owner.stdout.readline), 60)
        assert line.strip() == "ready"
        assert len(node_processes(name)) >= 2  # scheduler agent + worker agent (+ its worker)
        # While the owner lives, its heartbeat keeps the cluster up past the timeout.
        with pytest.raises(AssertionError):
            await wait_for(lambda: not node_processes(name), 5, "nodes to end")
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        # 3 s without a client, then the scheduler closes its workers and every agent exits.
        await wait_for(lambda: not node_processes(name), 20, "every node process to end")
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        owner.stdout.close()
        await remove_cluster(state_dir(), name)


@pytest.mark.timeout(60)
async def test_max_lifetime_ends_the_cluster():
    async with RawCloudCluster(n_workers=1, max_lifetime="4s", asynchronous=True) as cluster:
        async with Client(cluster, asynchronous=True) as client:
            await client.wait_for_workers(1, timeout=60)
            await wait_for(lambda: not node_processes(cluster.name), 30, "the cluster to end itself")


@pytest.mark.timeout(60)
async def test_idle_timeout_ends_the_cluster():
    async with RawCloudCluster(idle_timeout="2s", asynchronous=True) as cluster:
        await wait_for(lambda: not node_processes(cluster.name), 30, "the idle scheduler to end")


def test_expiry_rules():
    e = Expiry(started=100.0, no_client_timeout_s=10, max_lifetime_s=50)
    assert e.reason(105, has_client=False) is None
    assert e.reason(109, has_client=True) is None  # a client resets the no-client clock
    assert e.reason(118, has_client=False) is None
    assert e.reason(119, has_client=False) == "no client for 10s"
    assert Expiry(0, None, 50).reason(49.9, False) is None
    assert Expiry(0, None, 50).reason(50, True) == "max-lifetime (50s) reached"
    assert Expiry(0, None, None).reason(1e9, False) is None


def test_watchdogs_check_within_a_tenth_of_the_shortest_timeout():
    assert check_interval_s(3, None) == pytest.approx(0.3)
    assert check_interval_s(None, None) == 5.0
    assert check_interval_s(0.5) == 0.1
