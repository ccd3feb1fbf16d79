"""`dask-rawcloud plan` and `cleanup`, run as users run them: in separate processes.

plan works from the bundled catalog without an account and checks live
offerings (read-only) when credentials are there. cleanup finds and removes
what a killed process left in (moto's) EC2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

from dask_rawcloud import RawCloudCluster, WorkerPool
from dask_rawcloud.catalog import Catalog
from dask_rawcloud.emulator import FaultProxy
from dask_rawcloud.providers.aws import TAG_CLUSTER
from poll import run_then_kill, wait_until

pytestmark = pytest.mark.timeout(90)


def cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dask_rawcloud.cli", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )


def moto_env(url: str) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "DASK_RAWCLOUD__AWS__ENDPOINT_URL": url}


def test_plan_without_credentials_uses_the_bundled_catalog():
    out = cli("plan", "--cpu", "4", "--memory", "16GiB", "--market", "spot_with_fallback",
              "--region", "us-east-1", "--region", "us-west-2", "--minimum", "2",
              "--maximum", "20", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["live"] is False and plan["catalog"]["age_days"] >= 0
    (pool,) = plan["pools"]
    offers = pool["offers"]
    assert offers and {o["region"] for o in offers} == {"us-east-1", "us-west-2"}
    assert {o["market"] for o in offers} == {"spot", "on-demand"}
    # Spot first (the pool prefers it), each market cheapest per worker first.
    spot = [o for o in offers if o["market"] == "spot"]
    assert offers[:len(spot)] == spot
    per_worker = [o["price_per_hour"] / o["workers_per_instance"] for o in spot]
    assert per_worker == sorted(per_worker)
    best = offers[0]
    assert pool["usd_per_hour_min"] == pytest.approx(2 * best["price_per_hour"])
    assert pool["usd_per_hour_max"] == pytest.approx(20 * best["price_per_hour"])
    scheduler = plan["scheduler"]["usd_per_hour"]
    assert scheduler > 0 and plan["scheduler"]["offers"][0]["market"] == "on-demand"
    assert plan["usd_per_hour_max"] == pytest.approx(scheduler + pool["usd_per_hour_max"])

    text = cli("plan", "--cpu", "4", "--memory", "16GiB", "--region", "us-east-1")
    assert text.returncode == 0, text.stderr
    assert "days old" in text.stdout and "no credentials" in text.stdout
    assert "unbounded" in text.stdout  # no --maximum: say so rather than invent a cost


def test_plan_of_an_impossible_pool_names_the_largest_type():
    out = cli("plan", "--cpu", "4", "--memory", "64TiB", "--region", "us-east-1")
    assert out.returncode == 2
    assert "largest there is" in out.stderr and "Traceback" not in out.stderr


def test_plan_checks_live_offerings_with_credentials_and_creates_nothing(moto_url):
    with FaultProxy(moto_url) as proxy:
        out = cli("plan", "--cpu", "2", "--memory", "8GiB", "--market", "spot",
                  "--region", "us-east-2", "--json", env=moto_env(proxy.url))
        calls = dict(proxy.calls)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["live"] is True, plan["live_error"]
    assert plan["pools"][0]["offers"]
    # Read-only: nothing was created, and no call pages through every type.
    assert calls and all(action.startswith("Describe") for action in calls), calls
    assert calls.get("DescribeInstanceTypes", 0) <= 2


def test_cluster_plan_from_python_matches_the_cli():
    plan = RawCloudCluster.plan(provider="aws", region="us-east-1", pools=[
        WorkerPool("gpu", cpu=4, memory="16GiB", gpu=1, maximum=3, market="on-demand")])
    (pool,) = plan.pools
    assert all(o.market == "on-demand" and o.region == "us-east-1" for o in pool.offers)
    assert pool.usd_per_hour_max == pytest.approx(3 * pool.offers[0].price_per_hour)
    types = Catalog.bundled().types
    assert all(types[o.instance_type].gpus >= 1 for o in pool.offers)


LAUNCHER = textwrap.dedent("""
    import asyncio, sys
    from dask_rawcloud.model import LaunchRequest, NodeSpec, WorkerPool
    from dask_rawcloud.providers.aws import AWSProvider

    async def main(cluster_id):
        provider = AWSProvider(region="us-east-2")
        pool = WorkerPool("default", cpu=2, memory="4GiB", market="spot")
        spec = NodeSpec(cluster_id=cluster_id, role="worker", name=None,
                        scheduler_address="tcp://10.0.0.1:8786")
        result = await provider.launch(LaunchRequest(cluster_id, "t1", "worker", pool, spec,
                                                     ("default-0", "default-1", "default-2")))
        print(len(result.nodes), flush=True)
        await asyncio.sleep(3600)  # killed here, with its instances running

    asyncio.run(main(sys.argv[1]))
""")


def test_cleanup_removes_what_a_killed_process_left(moto_url, ec2):
    cluster_id = f"killed-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **moto_env(moto_url)}
    assert run_then_kill(LAUNCHER, cluster_id, env=env) == "3"
    tag = [{"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster_id]}]

    def live():
        found = ec2("us-east-2").describe_instances(Filters=[*tag, {
            "Name": "instance-state-name", "Values": ["pending", "running"]}])
        return [i for r in found["Reservations"] for i in r["Instances"]]

    assert len(live()) == 3

    listed = cli("cleanup", "--regions", "us-east-2", "--json", env=moto_env(moto_url))
    assert listed.returncode == 0, listed.stderr
    found = json.loads(listed.stdout)["clusters"][cluster_id]
    assert found == {"instances": 3, "security_groups": 1, "launch_templates": 0}
    assert len(live()) == 3  # listing removes nothing

    asked = cli("cleanup", "--regions", "us-east-2", env=moto_env(moto_url))
    assert asked.returncode == 0 and "nothing removed" in asked.stdout
    assert len(live()) == 3  # no --yes and no terminal to ask: nothing removed

    removed = cli("cleanup", "--regions", "us-east-2", "--yes", env=moto_env(moto_url))
    assert removed.returncode == 0, removed.stderr
    assert f"removed {cluster_id} (3 instances terminated)" in removed.stdout
    wait_until(lambda: not live(), timeout_s=30, what="instances terminated")
    assert not ec2("us-east-2").describe_security_groups(Filters=tag)["SecurityGroups"]
