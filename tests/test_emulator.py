"""A real AWS cluster configuration, rehearsed end to end on this machine.

EC2 calls go to a moto server over HTTP on 127.0.0.1 (through the fault
proxy); every instance moto launches boots from its own user-data as a local
process group on its own loopback address, and the cluster reaches it
exactly as it would on AWS. Every test ends with no live instance in moto
and no node process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import boto3
import dask
import dask.array as da
import dask.dataframe as dd
import pandas as pd
import pytest
from distributed import Client, Worker

from dask_rawcloud import BootError, ImageNotFound, RawCloudCluster, WorkerPool
from dask_rawcloud.emulator import Emulator
from dask_rawcloud.policy.scaling import Cause, Launch
from dask_rawcloud.providers.aws import TAG_CLUSTER
from dask_rawcloud.providers.local import node_processes
from dask_rawcloud.security import CertificateAuthority
from poll import run_then_kill, wait_until

REGION = "us-west-2"
pytestmark = pytest.mark.timeout(180)

#: Fit for processes on one machine: VMs get minutes, these get seconds.
REHEARSAL = {
    "rawcloud.aws.boot-timeout": "60s",
    "rawcloud.aws.spot-notice-poll": "200ms",
    "rawcloud.aws.billing-minimum": "3s",
    "rawcloud.node-watch-interval": "500ms",
    "rawcloud.worker.death-timeout": "10s",
    "rawcloud.scheduler.dashboard": False,
}


@pytest.fixture
def emu(monkeypatch):
    """A started emulator, with this process's boto pointed at it; nothing may outlive it."""
    with Emulator(terminate_grace_s=2.0) as emulator, dask.config.set(
        {**REHEARSAL, **emulator.config}
    ):
        for key, value in emulator.env.items():
            monkeypatch.setenv(key, value)
        yield emulator
        ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=emulator.endpoint_url)
        wait_until(lambda: not _live(ec2), timeout_s=30, what="no live instance in moto")
        wait_until(lambda: not emulator.running(), timeout_s=15, what="no node process")


def _live(ec2, cluster_id: str | None = None) -> list[dict]:
    tag = {"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster_id]} if cluster_id else {
        "Name": "tag-key", "Values": [TAG_CLUSTER]}
    found = ec2.describe_instances(Filters=[tag, {
        "Name": "instance-state-name", "Values": ["pending", "running", "shutting-down"]}])
    return [i for r in found["Reservations"] for i in r["Instances"]]


def _cluster(emu: Emulator, **kwargs) -> RawCloudCluster:
    if "pools" not in kwargs:
        kwargs = {"worker_cpu": 1, "worker_memory": "1GiB", **kwargs}
    return RawCloudCluster(provider="aws", region=REGION, endpoint_url=emu.endpoint_url,
                           name=f"emu-{uuid.uuid4().hex[:8]}", **kwargs)


def _connected(cluster) -> int:
    return len(cluster.scheduler_info.get("workers", {}))


def test_a_cluster_computes_real_results_on_emulated_ec2(emu):
    with _cluster(emu) as cluster, Client(cluster) as client:
        ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=emu.endpoint_url)
        cluster.scale(4)
        client.wait_for_workers(4, timeout=60)

        x = da.arange(1_000_000, chunks=100_000)
        assert x.sum().compute() == 499999500000
        frame = dd.from_pandas(
            pd.DataFrame({"k": [i % 7 for i in range(7000)], "v": range(7000)}), npartitions=8)
        sums = frame.groupby("k").v.sum().compute()
        assert sums.to_dict() == {k: sum(v for v in range(7000) if v % 7 == k) for k in range(7)}

        # Each node listens on the loopback address EC2 reports for it, never a 10.x one.
        reported = {i["PrivateIpAddress"] for i in _live(ec2, cluster.name)}
        assert len(reported) == 5 and all(a.startswith("127.") for a in reported)
        workers = {w.split("//")[1].rsplit(":", 1)[0] for w in client.scheduler_info()["workers"]}
        assert workers <= reported and len(workers) == 4
        assert cluster.scheduler_address.startswith("tls://127.")
        assert emu.skipped, "the environment-preparation part is reported as skipped"

        cluster.scale(0)
        wait_until(lambda: _connected(cluster) == 0, timeout_s=60, what="workers gone")
        wait_until(lambda: len(_live(ec2, cluster.name)) == 1, timeout_s=30,
                   what="only the scheduler's instance left")
    assert emu.proxy.calls["TerminateInstances"] >= 1


def test_adapt_scales_from_zero_on_a_burst_and_back_to_zero(emu):
    with _cluster(emu) as cluster, Client(cluster) as client:
        cluster.adapt(minimum=0, maximum=6, interval="200ms", target_duration="2s")
        fleets_before = emu.proxy.calls["CreateFleet"]
        futures = client.map(lambda i: time.sleep(0.4) or i, range(40))
        assert sum(client.gather(futures)) == sum(range(40))
        peak = max(e.count for _, e in cluster.adaptive_log if isinstance(e, Launch))
        assert 1 <= peak <= 6
        wait_until(lambda: _connected(cluster) == 0 and not cluster.worker_spec, timeout_s=60,
                   what="back to zero workers")
        # Every launch and every termination went through the EC2 API.
        assert emu.proxy.calls["CreateFleet"] > fleets_before
        assert emu.proxy.calls["TerminateInstances"] >= 1
        ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=emu.endpoint_url)
        wait_until(lambda: len(_live(ec2, cluster.name)) == 1, timeout_s=30,
                   what="worker instances terminated")


def test_workers_come_up_on_the_next_offer_when_the_first_has_no_capacity(emu):
    pool = WorkerPool("default", cpu=1, memory="1GiB", market="on-demand",
                      instance_types=("m6i.large", "m7i.large"))
    first = RawCloudCluster.plan(provider="aws", region=REGION, pools=[pool]).pools[0]
    first_type = first.offers[0].instance_type
    emu.inject_capacity_error(instance_type=first_type)
    with _cluster(emu, pools=[pool]) as cluster, Client(cluster) as client:
        cluster.scale(2)
        client.wait_for_workers(2, timeout=60)
        assert client.submit(sum, [1, 2, 3]).result() == 6
        types = {n.instance_type for n in cluster.sync(cluster.nodes) if n.role == "worker"}
        assert types and first_type not in types
        failed = [f for f in cluster.launcher.failures if f.offer and f.offer[0] == first_type]
        assert failed and "InsufficientInstanceCapacity" in str(failed[0].error)


def test_a_spot_notice_drains_the_worker_and_a_replacement_comes(emu):
    pool = WorkerPool("default", cpu=1, memory="1GiB", market="spot", minimum=2, maximum=3)
    with _cluster(emu, pools=[pool]) as cluster, Client(cluster) as client:
        cluster.adapt(interval="200ms")
        client.wait_for_workers(2, timeout=60)
        x = client.persist(da.random.RandomState(0).random((2000, 1000), chunks=(200, 1000)))
        expected = float(x.sum().compute())
        holders = client.who_has(x)
        victim_address = next(iter(next(iter(holders.values()))))
        victim = client.scheduler_info()["workers"][victim_address]["name"]
        node = next(n for n in cluster.sync(cluster.nodes) if n.name == victim)

        notice_s = 20.0
        noticed = time.time()
        emu.interrupt(node.id, notice_s=notice_s)
        wait_until(lambda: not emu.instances[node.id].alive, timeout_s=notice_s + 5,
                   what="the interrupted worker to leave")
        left_after = time.time() - noticed
        assert left_after < notice_s, "it drained and exited before the deadline"
        assert victim_address not in client.scheduler_info()["workers"]
        # Its data moved first: the result is whole and correct without recomputing it.
        assert float(x.sum().compute()) == pytest.approx(expected)
        assert any(isinstance(e, Launch) and e.cause is Cause.SPOT_NOTICE
                   for _, e in cluster.adaptive_log)
        wait_until(lambda: _connected(cluster) == 2, timeout_s=60, what="a replacement joined")


def test_a_bad_image_fails_fast_and_leaves_nothing(emu, state_dir):
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=emu.endpoint_url)
    started = time.monotonic()
    with pytest.raises(ImageNotFound, match="ami-0123456789abcdef0"):
        _cluster(emu, image="ami-0123456789abcdef0")
    assert time.monotonic() - started < 10
    assert not _live(ec2)
    assert not [p for p in state_dir.iterdir() if p.name.startswith("emu-")]


def test_a_scheduler_that_never_boots_fails_the_cluster_with_its_log(emu):
    emu.fail_boot(times=1, message="pip install failed: no matching distribution for dask")
    started = time.monotonic()
    with pytest.raises(BootError, match="no matching distribution for dask"):
        _cluster(emu)
    assert time.monotonic() - started < 60


def test_workers_whose_bootstrap_fails_are_terminated_and_not_relaunched_forever(emu):
    with _cluster(emu) as cluster:
        emu.fail_boot(times=100, message="pip install failed: no matching distribution")
        cluster.adapt(minimum=1, maximum=2, interval="200ms")
        wait_until(lambda: "default" in cluster._watch.held, timeout_s=60,
                   what="the pool held after repeated boot failures")
        failures = cluster.boot_failures
        assert len(failures) == 3
        assert "no matching distribution" in str(failures[0])  # the node's console log
        launched = len([i for i in emu.instances.values() if i.command[1:2] == ["-c"]])
        assert launched == 3
        # Held: ticks go on, nothing more is launched.
        ticks = len(cluster.adaptive_log)
        wait_until(lambda: len(cluster.adaptive_log) >= ticks + 3, timeout_s=10,
                   what="more adaptive ticks")
        assert len([i for i in emu.instances.values() if i.command[1:2] == ["-c"]]) == 3
        assert not cluster.worker_spec


CLIENT = textwrap.dedent("""
    import sys, time
    from distributed import Client
    from dask_rawcloud import RawCloudCluster

    cluster = RawCloudCluster(provider="aws", region=sys.argv[2], name=sys.argv[1],
                              worker_cpu=1, worker_memory="1GiB", no_client_timeout="3s")
    cluster.scale(2)
    Client(cluster).wait_for_workers(2, timeout=60)
    print("ready", flush=True)
    time.sleep(3600)  # killed here, with its cluster running
""")


def test_a_killed_client_leaves_no_instance_behind(emu, state_dir):
    name = f"emu-killed-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, **emu.env, "DASK_RAWCLOUD__WORKER__DEATH_TIMEOUT": "5s",
           "DASK_RAWCLOUD__AWS__BOOT_TIMEOUT": "60s"}
    assert run_then_kill(CLIENT, name, REGION, env=env) == "ready"
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=emu.endpoint_url)
    assert len(_live(ec2, name)) == 3
    # No help from anyone: the scheduler's no-client watchdog ends it, its
    # workers lose it and end, and every machine powers off.
    wait_until(lambda: not _live(ec2, name), timeout_s=45, what="every instance terminated")
    assert not node_processes(name)
    down = subprocess.run([sys.executable, "-m", "dask_rawcloud.cli", "down", name],
                          env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr  # forgets the record


def test_tls_refuses_a_worker_without_the_clusters_certificate(emu):
    with _cluster(emu) as cluster, Client(cluster) as client:
        address = cluster.scheduler_address
        assert address.startswith("tls://")

        async def join(security) -> None:
            async with Worker(address, security=security, nthreads=1, death_timeout=3):
                pass

        with pytest.raises(Exception):  # no certificate at all
            cluster.sync(join, None)
        stranger = CertificateAuthority.create("someone-else").client_security()
        with pytest.raises(Exception):  # a certificate from another authority
            cluster.sync(join, stranger)
        assert not client.scheduler_info()["workers"]


def test_up_emulate_runs_the_aws_provider_in_the_foreground_and_tears_down():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    up = subprocess.Popen(
        [sys.executable, "-m", "dask_rawcloud.cli", "up", "--emulate", "--workers", "1",
         "--name", f"emu-up-{uuid.uuid4().hex[:6]}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [up.stdout.readline() for _ in range(2)]
        assert lines[0].startswith("cluster") and "tls://127." in lines[1], lines
    finally:
        up.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = up.communicate(timeout=60)
    assert up.returncode == 0, err
    assert "EC2 emulator at http://127.0.0.1:" in err
    assert "removed" in out


def test_metadata_requires_a_session_token_as_imdsv2_does():
    import urllib.error
    import urllib.request

    from dask_rawcloud.emulator import MetadataService
    from dask_rawcloud.imds import Metadata

    service = MetadataService().start()
    try:
        service.put("i-0123456789abcdef0", **{"local-ipv4": "127.42.0.7"})
        metadata = Metadata(service.endpoint("i-0123456789abcdef0"))
        assert metadata.get("local-ipv4") == "127.42.0.7"
        assert metadata.get("spot/instance-action") is None  # no notice: 404
        plain = urllib.request.Request(f"{service.endpoint('i-0123456789abcdef0')}"
                                       "latest/meta-data/local-ipv4")
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(plain, timeout=5)  # IMDSv1, without a token: refused
    finally:
        service.stop()


async def test_the_emulator_works_as_an_async_context_manager(monkeypatch):
    from dask_rawcloud.model import LaunchRequest, NodeSpec
    from dask_rawcloud.providers.aws import AWSProvider

    async with Emulator() as emu:
        for key, value in emu.env.items():
            monkeypatch.setenv(key, value)
        provider = AWSProvider(region=REGION, endpoint_url=emu.endpoint_url)
        cluster_id = f"emu-async-{uuid.uuid4().hex[:6]}"
        spec = NodeSpec(cluster_id=cluster_id, role="scheduler", name="scheduler", tls_ca=None)
        try:
            result = await provider.launch(LaunchRequest(
                cluster_id, "t", "scheduler", WorkerPool("scheduler"), spec, ("scheduler",)))
            (node,) = result.nodes
            (listed,) = await provider.list(cluster_id)
            assert listed.address and listed.address.startswith("tcp://127.")
        finally:
            await provider.terminate([node.id])
            await provider.cleanup(cluster_id)
            await provider.close()
        wait_until(lambda: not emu.instances[node.id].alive, timeout_s=15,
                   what="TerminateInstances to end the node's processes")
