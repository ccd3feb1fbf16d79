"""The EC2 provider against a real moto server over HTTP on 127.0.0.1, through the fault proxy.

Every call goes through the same aiobotocore code users run. The proxy makes
moto answer as AWS does under capacity shortages, quotas, throttling and
lost responses. No test connects to an address moto reports for an instance.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
import uuid

import pytest

from dask_rawcloud import (
    CapacityError,
    CredentialsError,
    ImageNotFound,
    InvalidRequest,
    NodeTooLarge,
    QuotaExceeded,
    WorkerPool,
)
from dask_rawcloud.bootstrap import USER_DATA_LIMIT, parse_user_data
from dask_rawcloud.config import aws_settings
from dask_rawcloud.emulator import FaultProxy
from dask_rawcloud.model import LaunchRequest, NodeSpec
from dask_rawcloud.providers import aws
from dask_rawcloud.providers.aws import TAG_CLUSTER, AWSProvider
from dask_rawcloud.security import CertificateAuthority

pytestmark = pytest.mark.timeout(60)

SPOT = WorkerPool("default", cpu=2, memory="4GiB", market="spot")
ON_DEMAND = WorkerPool("default", cpu=2, memory="8GiB", market="on-demand",
                       instance_types=("m6i.large", "m7i.large"))


@pytest.fixture
def proxy(moto_url):
    with FaultProxy(moto_url) as p:
        yield p


@pytest.fixture
def cluster_id() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def make_provider(proxy, aws_credentials, cluster_id):
    """Providers that talk to moto through the proxy; the test's cluster is removed after it."""
    made: list[AWSProvider] = []

    def make(**kwargs) -> AWSProvider:
        kwargs.setdefault("endpoint_url", proxy.url)
        kwargs.setdefault("region", "us-east-1")
        provider = AWSProvider(**kwargs)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.terminate([n.id for n in await provider.list(cluster_id)])
        await provider.cleanup(cluster_id)
        await provider.close()


def request(cluster_id: str, pool: WorkerPool, n: int, role: str = "worker",
            tls: bool = False) -> LaunchRequest:
    extra = {}
    if tls:
        ca = CertificateAuthority.create(cluster_id)
        pair = ca.issue("worker")
        extra = {"tls_ca": ca.cert_pem, "tls_cert": pair.cert, "tls_key": pair.key}
    spec = NodeSpec(cluster_id=cluster_id, role=role, name=None,
                    scheduler_address="tls://10.0.0.1:8786", **extra)
    names = ("scheduler",) if role == "scheduler" else tuple(f"{pool.name}-{i}" for i in range(n))
    return LaunchRequest(cluster_id, uuid.uuid4().hex[:16], role, pool, spec, names)


def live_instances(ec2, cluster_id: str, region: str = "us-east-1") -> list[dict]:
    pages = ec2(region).get_paginator("describe_instances").paginate(Filters=[
        {"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster_id]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]},
    ])
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


@pytest.mark.parametrize("n", [1, 50, 500])
async def test_launch_is_one_fleet_call_and_at_most_ten_calls_in_all(make_provider, proxy, ec2,
                                                                     cluster_id, n):
    # Its own region: moto keeps terminated instances and scans them all on
    # every look-up, which would slow the other tests down.
    provider = make_provider(region="us-east-2")
    result = await provider.launch(request(cluster_id, SPOT, n))
    assert not result.failures
    assert [node.name for node in result.nodes] == [f"default-{i}" for i in range(n)]
    launched = live_instances(ec2, cluster_id, "us-east-2")
    assert {node.id for node in result.nodes} == {i["InstanceId"] for i in launched}
    assert all(node.market == "spot" and node.zone.startswith("use2-az") for node in result.nodes)
    # Setup and catalog look-ups included; only the candidate types are described.
    assert provider.ec2.calls["CreateFleet"] == 1
    assert sum(provider.ec2.calls.values()) <= 10, dict(provider.ec2.calls)
    assert not {"RunInstances", "CreateTags"} & set(proxy.calls)
    described = next(p for a, p in proxy.requests if a == "DescribeInstanceTypes")
    assert len([k for k in described if k.startswith("InstanceType.")]) <= 2 * SPOT.max_types


async def test_large_requests_are_batched_with_one_token_per_call(make_provider, proxy, cluster_id):
    settings = aws_settings().__class__(**{**aws_settings().__dict__, "fleet_batch": 20})
    provider = make_provider(settings=settings)
    result = await provider.launch(request(cluster_id, SPOT, 50))
    assert len(result.nodes) == 50
    tokens = [p["ClientToken"] for a, p in proxy.requests if a == "CreateFleet"]
    assert len(tokens) == 3 and len(set(tokens)) == 3
    assert [int(p["TargetCapacitySpecification.TotalTargetCapacity"])
            for a, p in proxy.requests if a == "CreateFleet"] == [20, 20, 10]


async def test_every_resource_is_tagged_in_the_call_that_creates_it(make_provider, proxy, ec2,
                                                                    cluster_id):
    provider = make_provider()
    await provider.launch(request(cluster_id, SPOT, 3))
    for instance in live_instances(ec2, cluster_id):
        tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
        assert tags[TAG_CLUSTER] == cluster_id
        assert tags["rawcloud:pool"] == "default" and tags["rawcloud:role"] == "worker"
    volume_ids = [m["Ebs"]["VolumeId"] for i in live_instances(ec2, cluster_id)
                  for m in i["BlockDeviceMappings"]]
    for volume in ec2().describe_volumes(VolumeIds=volume_ids)["Volumes"]:
        assert {"Key": TAG_CLUSTER, "Value": cluster_id} in volume["Tags"]
    (group,) = ec2().describe_security_groups(
        Filters=[{"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster_id]}])["SecurityGroups"]
    assert group["GroupName"] == f"dask-rawcloud-{cluster_id}"
    created = {a: p for a, p in proxy.requests if a in ("CreateLaunchTemplate", "CreateFleet",
                                                        "CreateSecurityGroup")}
    for action, params in created.items():
        tagged = {v for k, v in params.items() if k.startswith("TagSpecification")}
        assert cluster_id in tagged, action
    assert "CreateTags" not in proxy.calls


async def test_launch_template_is_hardened_and_user_data_is_small(make_provider, proxy,
                                                                  cluster_id):
    provider = make_provider()
    await provider.launch(request(cluster_id, SPOT, 2, tls=True))
    params = next(p for a, p in proxy.requests if a == "CreateLaunchTemplate")
    data = {k.removeprefix("LaunchTemplateData."): v for k, v in params.items()}
    assert data["MetadataOptions.HttpTokens"] == "required"
    assert data["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert data["BlockDeviceMapping.1.Ebs.Encrypted"] == "true"
    assert data["BlockDeviceMapping.1.Ebs.DeleteOnTermination"] == "true"
    script = base64.b64decode(data["UserData"]).decode()
    assert len(script.encode()) < USER_DATA_LIMIT // 4  # far under EC2's 16 KB, with TLS on
    blob, prepare, command = parse_user_data(script)
    spec = json.loads(gzip.decompress(blob))
    assert spec["tls_key"].startswith("-----BEGIN PRIVATE KEY")
    assert spec["on_exit"] == "poweroff" and spec["name"] is None and spec["host"] is None
    assert command[1:] == ["-m", "dask_rawcloud.node", "--spec", "/run/dask-rawcloud/spec"]
    assert any("pip install" in line and "dask-rawcloud==" in line for line in prepare)
    # The template is gone once its fleet returned; nothing accumulates.
    assert provider.ec2.calls["DeleteLaunchTemplate"] == 1


async def test_scheduler_ports_open_only_to_the_client(make_provider, ec2, cluster_id):
    provider = make_provider(client_cidr="203.0.113.7/32")
    await provider.launch(request(cluster_id, SPOT, 1))
    (group,) = ec2().describe_security_groups(
        Filters=[{"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster_id]}])["SecurityGroups"]
    ranges = {(r.get("FromPort"), r.get("ToPort")): [c["CidrIp"] for c in r["IpRanges"]]
              for r in group["IpPermissions"]}
    assert ranges[(8786, 8787)] == ["203.0.113.7/32"]
    assert "0.0.0.0/0" not in {c for cidrs in ranges.values() for c in cidrs}
    self_rule = next(r for r in group["IpPermissions"] if r["UserIdGroupPairs"])
    assert self_rule["UserIdGroupPairs"][0]["GroupId"] == group["GroupId"]


async def test_an_unknown_client_address_asks_the_user_for_it(monkeypatch, aws_credentials):
    provider = AWSProvider(region="us-east-1", endpoint_url=None)
    monkeypatch.setattr(aws, "CHECKIP_URL", "http://127.0.0.1:9/")  # nothing listens there
    with pytest.raises(InvalidRequest, match=r"client_cidr="):
        await provider._client_address()
    with pytest.raises(InvalidRequest, match="not a CIDR"):
        AWSProvider(region="us-east-1", client_cidr="my laptop")
    await provider.close()


async def test_the_scheduler_runs_on_a_small_on_demand_instance(make_provider, cluster_id):
    provider = make_provider()
    result = await provider.launch(request(cluster_id, SPOT, 1, role="scheduler"))
    (node,) = result.nodes
    assert (node.instance_type, node.market) == ("t3.medium", "on-demand")
    (listed,) = await provider.list(cluster_id)
    assert listed.role == "scheduler" and listed.address.endswith(":8786")


async def test_no_capacity_falls_to_the_next_offer_and_is_remembered(make_provider, proxy,
                                                                    cluster_id):
    provider = make_provider()
    first = provider.ranked(ON_DEMAND)[0].instance_type
    proxy.inject_capacity_error(instance_type=first)
    result = await provider.launch(request(cluster_id, ON_DEMAND, 4))
    assert len(result.nodes) == 4
    assert {node.instance_type for node in result.nodes} == {"m7i.large"} != {first}
    failed = [f for f in result.failures if isinstance(f.error, CapacityError)]
    assert failed and all(f.offer[0] == first and f.count == 0 for f in failed)
    assert "InsufficientInstanceCapacity" in str(failed[0].error)
    # While it cools off, the failed offer is ranked after the others.
    assert provider.ranked(ON_DEMAND)[0].instance_type != first


async def test_spot_shortage_falls_back_to_on_demand_when_the_pool_allows(make_provider, proxy,
                                                                         cluster_id):
    provider = make_provider()
    proxy.inject_capacity_error(market="spot")
    pool = WorkerPool("default", cpu=2, memory="8GiB", market="spot_with_fallback")
    result = await provider.launch(request(cluster_id, pool, 3))
    assert [node.market for node in result.nodes] == ["on-demand"] * 3
    markets = [p["TargetCapacitySpecification.DefaultTargetCapacityType"]
               for a, p in proxy.requests if a == "CreateFleet"]
    assert markets == ["spot", "on-demand"]
    # A spot-only pool gets nothing, and says why.
    only_spot = await provider.launch(request(cluster_id, SPOT, 2))
    assert not only_spot.nodes and only_spot.failures[-1].count == 2
    assert isinstance(only_spot.failures[-1].error, CapacityError)


async def test_a_pool_spans_regions_starting_with_the_schedulers(make_provider, proxy, ec2,
                                                                 cluster_id):
    provider = make_provider(regions=["us-east-1", "us-west-2"])
    proxy.inject_capacity_error(region="us-east-1")
    pool = WorkerPool("default", cpu=2, memory="8GiB", regions=("us-west-2", "us-east-1"))
    provider.check(pool)
    result = await provider.launch(request(cluster_id, pool, 2))
    assert {node.region for node in result.nodes} == {"us-west-2"}
    regions = [p for a, p in proxy.requests if a == "CreateFleet"]
    assert len(regions) == 2  # us-east-1 (the scheduler's) was tried first
    assert len(live_instances(ec2, cluster_id, "us-west-2")) == 2
    assert len(await provider.list(cluster_id)) == 2


async def test_throttled_calls_back_off_and_reuse_their_client_token(make_provider, proxy, ec2,
                                                                     cluster_id):
    provider = make_provider()
    proxy.throttle("CreateFleet", times=2)
    started = time.monotonic()
    result = await provider.launch(request(cluster_id, SPOT, 5))
    assert len(result.nodes) == 5 and time.monotonic() - started < 30
    tokens = [p["ClientToken"] for a, p in proxy.requests if a == "CreateFleet"]
    assert len(tokens) == 3 and len(set(tokens)) == 1
    assert provider.ec2.retries >= 2 and provider.ec2.calls["CreateFleet"] == 1
    assert len(live_instances(ec2, cluster_id)) == 5


async def test_a_lost_answer_never_launches_twice(make_provider, proxy, ec2, cluster_id):
    provider = make_provider()
    proxy.lose_responses("CreateFleet")
    result = await provider.launch(request(cluster_id, SPOT, 5))
    assert len(result.nodes) == 5
    assert proxy.calls["CreateFleet"] == 2
    assert len(live_instances(ec2, cluster_id)) == 5  # the retry got the first answer


async def test_a_repeated_request_launches_nothing_new(make_provider, ec2, cluster_id):
    provider = make_provider()
    req = request(cluster_id, SPOT, 3)
    first, again = await provider.launch(req), await provider.launch(req)
    assert [n.id for n in first.nodes] == [n.id for n in again.nodes]
    assert len(live_instances(ec2, cluster_id)) == 3


async def test_a_quota_launches_what_fits_and_says_so_for_the_rest(make_provider, proxy,
                                                                   cluster_id):
    provider = make_provider()
    proxy.limit_instances(3)
    result = await provider.launch(request(cluster_id, SPOT, 5))
    assert len(result.nodes) == 3
    last = result.failures[-1]
    assert isinstance(last.error, QuotaExceeded) and last.count == 2
    assert "Service Quotas" in str(last.error)


async def test_a_bad_image_fails_fast_and_leaves_nothing(make_provider, proxy, ec2, cluster_id):
    provider = make_provider(image="ami-0123456789abcdef0")
    started = time.monotonic()
    with pytest.raises(ImageNotFound, match="ami-0123456789abcdef0"):
        await provider.launch(request(cluster_id, SPOT, 2))
    assert time.monotonic() - started < 10
    assert not [a for a in proxy.calls if a.startswith(("Create", "Run"))]
    assert not live_instances(ec2, cluster_id)


def test_a_type_nobody_offers_is_refused_before_anything_starts(aws_credentials):
    provider = AWSProvider(region="us-east-1")
    with pytest.raises(NodeTooLarge, match="m6i.nosuch"):
        provider.check(WorkerPool("default", instance_types=("m6i.nosuch",)))
    with pytest.raises(NodeTooLarge, match=r"largest there is"):
        provider.check(WorkerPool("default", cpu=4096))


async def test_missing_credentials_fail_before_anything_is_created(proxy, cluster_id):
    provider = AWSProvider(region="us-east-1", endpoint_url=proxy.url)
    try:
        with pytest.raises(CredentialsError, match="AWS_ACCESS_KEY_ID"):
            await provider.launch(request(cluster_id, SPOT, 1))
    finally:
        await provider.close()
    assert not proxy.calls  # refused before any request left the client


async def test_refused_credentials_fail_before_anything_is_created(make_provider, proxy,
                                                                   cluster_id):
    provider = make_provider()
    proxy.fail("DescribeSubnets", "AuthFailure", "AWS was not able to validate the credentials",
               status=401)
    with pytest.raises(CredentialsError, match="AuthFailure"):
        await provider.launch(request(cluster_id, SPOT, 1))
    assert not [a for a in proxy.calls if a.startswith(("Create", "Run"))]


def test_an_unknown_region_is_refused_at_once():
    with pytest.raises(InvalidRequest, match="us-moon-1"):
        AWSProvider(region="us-moon-1")


async def test_terminate_and_cleanup_leave_nothing(make_provider, ec2, cluster_id):
    provider = make_provider()
    await provider.launch(request(cluster_id, SPOT, 1, role="scheduler"))
    await provider.launch(request(cluster_id, SPOT, 4))
    nodes = await provider.list(cluster_id)
    assert len(nodes) == 5
    await provider.terminate([n.id for n in nodes] + ["i-00000000000000000"])
    await provider.cleanup(cluster_id)
    assert not live_instances(ec2, cluster_id)
    tag = [{"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster_id]}]
    assert not ec2().describe_security_groups(Filters=tag)["SecurityGroups"]
    assert not ec2().describe_launch_templates(Filters=tag)["LaunchTemplates"]
    assert cluster_id not in await provider.tagged()
