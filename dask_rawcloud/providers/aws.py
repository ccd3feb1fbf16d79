"""EC2 through aiobotocore: a node is an instance, and hundreds start in one call.

Mechanism only. Placement (``policy.placement.rank``) says which types, zones
and markets serve a pool, cheapest first; this module turns that ranking into
CreateFleet calls, and reports what launched and what failed.

Per region, once for the provider's life: the default VPC's subnets (with
their zone ids), the image, and the live specs, offerings and spot prices of
the candidate types only. Per cluster and region: one security group. Per
launch request and region: one launch template carrying the request's
user-data, deleted once its fleet call returns (an instant fleet needs it no
longer). Every resource is tagged with the cluster's id in the call that
creates it, so ``list``, ``cleanup`` and ``dask-rawcloud cleanup`` find it
from any process.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ipaddress
import logging
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..bootstrap import pinned_packages, user_data
from ..catalog import Catalog, InstanceType
from ..config import AWSSettings, aws_settings
from ..errors import (
    CapacityError,
    ImageNotFound,
    InvalidRequest,
    ProviderError,
    QuotaExceeded,
    RawCloudError,
)
from ..model import LaunchFailure, LaunchRequest, LaunchResult, Node, NodeState, WorkerPool
from ..policy.placement import FailureKey, Offer, markets, rank
from ..policy.scaling import Billing
from .base import Provider
from .ec2 import EC2, error_for, known_regions

__all__ = ["AWSProvider", "TAG_CLUSTER"]

logger = logging.getLogger(__name__)

TAG_CLUSTER = "rawcloud:cluster"
TAG_POOL = "rawcloud:pool"
TAG_ROLE = "rawcloud:role"
TAG_REQUEST = "rawcloud:request"
TAG_PROTOCOL = "rawcloud:protocol"
#: Instance states that still bill, or may: what ``cleanup`` waits out.
NOT_TERMINATED = ["pending", "running", "shutting-down", "stopping", "stopped"]
LIVE = ["pending", "running"]
MAX_OVERRIDES = 50
TERMINATE_BATCH = 1000
CHECKIP_URL = "https://checkip.amazonaws.com"


@dataclass(frozen=True)
class Image:
    id: str
    arch: str
    root_device: str


@dataclass
class Region:
    """What is looked up once per region."""

    name: str
    vpc_id: str
    subnets: dict[str, str]  # zone id -> default subnet id
    zone_ids: dict[str, str]  # zone name -> zone id
    images: dict[str, Image]  # arch -> image
    security_groups: dict[str, str] = field(default_factory=dict)  # cluster id -> group id


def _tags(cluster_id: str, **extra: str) -> list[dict[str, str]]:
    tags = {TAG_CLUSTER: cluster_id, "Name": f"dask-rawcloud {cluster_id}", **extra}
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def _tag_spec(resource: str, tags: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [{"ResourceType": resource, "Tags": tags}]


def _is_loopback_url(url: str | None) -> bool:
    if not url:
        return False
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _instance_type(described: dict[str, Any]) -> InstanceType:
    gpus = described.get("GpuInfo", {}).get("Gpus", [])
    arches = described.get("ProcessorInfo", {}).get("SupportedArchitectures", ["x86_64"])
    return InstanceType(
        name=described["InstanceType"],
        cpu=described["VCpuInfo"]["DefaultVCpus"],
        memory=described["MemoryInfo"]["SizeInMiB"] * 2**20,
        arch="arm64" if "arm64" in arches else "x86_64",
        gpus=sum(g.get("Count", 0) for g in gpus),
        gpu_model=gpus[0]["Name"] if gpus else None,
        gpu_memory=gpus[0]["MemoryInfo"]["SizeInMiB"] * 2**20 if gpus else 0,
    )


class AWSProvider(Provider):
    """Nodes as EC2 instances.

    Parameters
    ----------
    regions : list of str, optional
        Regions the cluster may use; the first holds the scheduler. Default:
        ``region``, else ``rawcloud.aws.region``. A pool's own ``regions``
        narrow this for its workers.
    region : str, optional
        Shorthand for one region.
    endpoint_url : str, optional
        Another EC2 endpoint, such as the emulator's (``rawcloud.aws.endpoint-url``).
    image : str, optional
        AMI id for every node (``rawcloud.aws.image``); default: the newest
        Amazon Linux 2023 per architecture.
    client_cidr : str, optional
        Who may reach the scheduler and dashboard (``rawcloud.aws.client-cidr``);
        default: this machine's public address.
    packages : list of str, optional
        More pip packages for the nodes (``rawcloud.aws.packages``).
    scheduler_instance_type : str, optional
        (``rawcloud.aws.scheduler-instance-type``)
    catalog : Catalog, optional
        Instance types and prices (default: the bundled snapshot).
    """

    name = "aws"

    def __init__(
        self,
        regions: Sequence[str] | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        image: str | None = None,
        client_cidr: str | None = None,
        packages: Sequence[str] | None = None,
        scheduler_instance_type: str | None = None,
        catalog: Catalog | None = None,
        settings: AWSSettings | None = None,
    ):
        s = settings or aws_settings()
        self.settings = s
        self.boot_timeout_s = s.boot_timeout_s
        self.regions = tuple(regions or [region or s.region])
        unknown = sorted(set(self.regions) - set(known_regions()))
        if unknown:
            raise InvalidRequest(
                f"unknown AWS region(s) {', '.join(unknown)}: use names such as us-east-1 "
                "(regions= or rawcloud.aws.region)."
            )
        self.endpoint_url = endpoint_url or s.endpoint_url
        self.image = image or s.image
        self.client_cidr = self._check_cidr(client_cidr or s.client_cidr)
        self.packages = pinned_packages(packages if packages is not None else s.packages)
        self.scheduler_instance_type = scheduler_instance_type or s.scheduler_instance_type
        self.catalog = catalog or Catalog.bundled()
        self.ec2 = EC2(self.endpoint_url, s.max_attempts)
        #: Offers that failed for capacity, and when: placement ranks them last for a while.
        self.failures: dict[FailureKey, float] = {}
        self._regions: dict[str, Region] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._described: set[tuple[str, str]] = set()  # (region, type) with live specs
        self._spot_priced: set[tuple[str, str]] = set()  # (region, type) with live spot prices
        self._where: dict[str, str] = {}  # instance id -> region
        self._names: dict[str, str] = {}  # instance id -> node name
        self._results: dict[str, LaunchResult] = {}  # token -> what it launched

    # -- checks, before anything exists -----------------------------------------
    @staticmethod
    def _check_cidr(cidr: str | None) -> str | None:
        if cidr is None:
            return None
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise InvalidRequest(
                f"client_cidr {cidr!r} is not a CIDR: write it like 203.0.113.7/32."
            ) from None
        if network.prefixlen == 0:
            logger.warning("the scheduler and dashboard ports are open to %s, the whole internet "
                           "(mutual TLS still guards the scheduler)", network)
        return str(network)

    def _pool(self, pool: WorkerPool, role: str) -> WorkerPool:
        """The pool as this provider places it: the scheduler is one small on-demand node."""
        if role == "scheduler":
            return dataclasses.replace(
                pool, instance_types=(self.scheduler_instance_type,),
                market=self.settings.scheduler_market, regions=self.regions[:1],
            )
        regions = pool.regions or self.regions
        unknown = sorted(set(regions) - set(known_regions()))
        if unknown:
            raise InvalidRequest(f"pool {pool.name!r}: unknown AWS region(s) {', '.join(unknown)}.")
        # The scheduler's region first, then the pool's others in its own order.
        ordered = [r for r in self.regions[:1] if r in regions] + [
            r for r in regions if r not in self.regions[:1]]
        return dataclasses.replace(pool, regions=tuple(ordered))

    def check(self, pool: WorkerPool, role: str = "worker") -> None:
        pool = self._pool(pool, role)
        rank(pool, self.catalog)  # raises NodeTooLarge, naming the largest type
        # Remember every region a pool may use, so `list` and `cleanup` look there.
        self.regions = tuple(dict.fromkeys([*self.regions, *pool.regions]))

    def options(self) -> dict:
        return {"regions": list(self.regions), "endpoint_url": self.endpoint_url}

    def ranked(self, pool: WorkerPool, role: str = "worker") -> list[Offer]:
        """The pool's offers as the catalog now knows them, cheapest per worker first."""
        return rank(self._pool(pool, role), self.catalog, self.failures, time.time(),
                    self.settings.failure_cooloff_s)

    async def offers(self, pool: WorkerPool, role: str = "worker",
                     live: bool = False) -> list[Offer]:
        if live:  # DescribeSubnets, DescribeImages and the candidates' offerings and prices
            placed = self._pool(pool, role)
            for name in placed.regions:
                await self._live_catalog(await self._region(name), placed)
        return self.ranked(pool, role)

    def can_check_live(self) -> bool:
        return self.ec2.has_credentials()

    def billing(self, pool: WorkerPool) -> Billing:
        best = self.ranked(pool)[0]
        return Billing(self.settings.billing_minimum_s, 1.0, best.price_per_worker_hour)

    # -- once per region ------------------------------------------------------------
    async def _region(self, name: str) -> Region:
        async with self._locks[name]:
            if name not in self._regions:
                subnets = (await self.ec2.call(
                    name, "DescribeSubnets",
                    Filters=[{"Name": "default-for-az", "Values": ["true"]}],
                ))["Subnets"]
                if not subnets:
                    raise InvalidRequest(
                        f"region {name} has no default VPC subnets to launch into. Create the "
                        f"default VPC once (`aws ec2 create-default-vpc --region {name}`)."
                    )
                self._regions[name] = Region(
                    name=name,
                    vpc_id=subnets[0]["VpcId"],
                    subnets={s["AvailabilityZoneId"]: s["SubnetId"] for s in subnets},
                    zone_ids={s["AvailabilityZone"]: s["AvailabilityZoneId"] for s in subnets},
                    images=await self._images(name),
                )
        return self._regions[name]

    async def _images(self, region: str) -> dict[str, Image]:
        if self.image:
            found = (await self.ec2.call(region, "DescribeImages", ImageIds=[self.image]))["Images"]
            if not found or found[0].get("State", "available") != "available":
                raise ImageNotFound(f"image {self.image} is not available in {region}. Check the "
                                    "AMI id and its region (image= or rawcloud.aws.image).")
        else:
            found = (await self.ec2.call(
                region, "DescribeImages", Owners=["amazon"],
                Filters=[{"Name": "name", "Values": ["al2023-ami-2023.*-kernel-*"]},
                         {"Name": "state", "Values": ["available"]}],
            ))["Images"]
            found = [i for i in found if "minimal" not in i["Name"]]
            found.sort(key=lambda i: (i.get("CreationDate", ""), i["Name"]), reverse=True)
        images: dict[str, Image] = {}
        for i in found:
            arch = i.get("Architecture", "x86_64")
            images.setdefault(arch, Image(i["ImageId"], arch, i.get("RootDeviceName", "/dev/xvda")))
        if not images:
            raise ImageNotFound(f"no Amazon Linux 2023 image found in {region}: pass image=.")
        return images

    async def _live_catalog(self, region: Region, pool: WorkerPool) -> Catalog:
        """Overlay live specs, offerings and spot prices of this pool's candidate types."""
        local = dataclasses.replace(pool, regions=(region.name,))
        try:
            ranked = rank(local, self.catalog)
        except RawCloudError:
            return self.catalog
        candidates = list(dict.fromkeys(o.instance_type for o in ranked))
        new = [t for t in candidates if (region.name, t) not in self._described]
        if new:
            described = await self.ec2.pages(region.name, "DescribeInstanceTypes",
                                             "InstanceTypes", InstanceTypes=new)
            offered: dict[str, set[str]] = {t: set() for t in new}
            for o in await self.ec2.pages(
                region.name, "DescribeInstanceTypeOfferings", "InstanceTypeOfferings",
                LocationType="availability-zone-id",
                Filters=[{"Name": "instance-type", "Values": new}],
            ):
                offered[o["InstanceType"]].add(o["Location"])
            self.catalog = (self.catalog.with_types(map(_instance_type, described))
                            .with_offerings(region.name, offered))
            self._described.update((region.name, t) for t in new)
        unpriced = [t for t in candidates if (region.name, t) not in self._spot_priced]
        if "spot" in pool.market and unpriced:
            history = await self.ec2.pages(
                region.name, "DescribeSpotPriceHistory", "SpotPriceHistory",
                InstanceTypes=unpriced, ProductDescriptions=["Linux/UNIX"],
                StartTime=time.time(),
            )
            live = [(h["InstanceType"], region.zone_ids.get(h["AvailabilityZone"], ""),
                     float(h["SpotPrice"])) for h in history]
            self.catalog = self.catalog.with_spot(region.name, live)
            self._spot_priced.update((region.name, t) for t in unpriced)
        return self.catalog

    async def _security_group(self, region: Region, cluster_id: str) -> str:
        async with self._locks[f"{region.name}/{cluster_id}"]:
            if cluster_id not in region.security_groups:
                cidr = self.client_cidr or await self._client_address()
                group = (await self.ec2.call(
                    region.name, "CreateSecurityGroup",
                    GroupName=f"dask-rawcloud-{cluster_id}",
                    Description=f"dask-rawcloud cluster {cluster_id}",
                    VpcId=region.vpc_id,
                    TagSpecifications=_tag_spec("security-group", _tags(cluster_id)),
                ))["GroupId"]
                s = self.settings
                await self.ec2.call(region.name, "AuthorizeSecurityGroupIngress", GroupId=group,
                                    IpPermissions=[
                    # The cluster's own nodes reach each other on any port.
                    {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group}]},
                    # The client reaches the scheduler and its dashboard, nothing else.
                    {"IpProtocol": "tcp", "FromPort": min(s.scheduler_port, s.dashboard_port),
                     "ToPort": max(s.scheduler_port, s.dashboard_port),
                     "IpRanges": [{"CidrIp": cidr, "Description": "dask-rawcloud client"}]},
                ])
                region.security_groups[cluster_id] = group
        return region.security_groups[cluster_id]

    async def _client_address(self) -> str:
        """This machine's address as the cluster will see it, as a /32."""
        if _is_loopback_url(self.endpoint_url):
            return "127.0.0.0/8"  # an emulated cloud on this machine
        try:
            text = await asyncio.to_thread(
                lambda: urllib.request.urlopen(CHECKIP_URL, timeout=5).read().decode()
            )
            return f"{ipaddress.ip_address(text.strip())}/32"
        except (OSError, ValueError) as e:
            raise InvalidRequest(
                f"could not find this machine's public address ({e}), which is the only one "
                "allowed to reach the scheduler. Give it: client_cidr='203.0.113.7/32' or "
                "rawcloud.aws.client-cidr."
            ) from None

    # -- launching ----------------------------------------------------------------
    async def launch(self, request: LaunchRequest) -> LaunchResult:
        if request.token in self._results:
            return self._results[request.token]
        pool = self._pool(request.pool, request.role)
        spec = dataclasses.replace(
            request.spec,
            name="scheduler" if request.role == "scheduler" else None,
            host=None,  # the node listens on the address its metadata service reports
            port=self.settings.scheduler_port if request.role == "scheduler" else 0,
            dashboard_port=(self.settings.dashboard_port
                            if request.spec.dashboard_port is not None else None),
            on_exit="poweroff",
            spot_poll_s=self.settings.spot_notice_poll_s,
        )
        script = user_data(spec, self.packages)
        names = list(request.names)
        nodes: list[Node] = []
        failures: list[LaunchFailure] = []
        stop: RawCloudError | None = None
        # Fall from offer to offer: types and zones within one call, then the
        # next region, then (when the pool allows) the next market.
        for market, region_name in [(m, r) for m in markets(pool.market) for r in pool.regions]:
            if not names or stop is not None:
                break
            try:
                await self._launch_in(request, pool, market, region_name, script,
                                      names, nodes, failures)
            except InvalidRequest as e:
                if not nodes:
                    raise  # bad image, credentials, type: nothing launched, say so now
                failures.append(LaunchFailure(request.token, e))
                stop = e
            except ProviderError as e:  # capacity, quota, throttling: try the next
                failures.append(LaunchFailure(request.token, e))
                if not isinstance(e, CapacityError):
                    stop = e
            # A quota is the account's: no other offer gets past it.
            stop = stop or next((f.error for f in failures if isinstance(f.error, QuotaExceeded)),
                                None)
        if names:
            reason = stop or next((f.error for f in reversed(failures)), None) or CapacityError(
                f"no offer for pool {pool.name!r} ({pool.describe()}) launched in "
                f"{', '.join(pool.regions)}."
            )
            failures.append(LaunchFailure(request.token, reason, count=len(names)))
        result = LaunchResult(tuple(nodes), tuple(failures))
        self._results[request.token] = result
        return result

    async def _launch_in(self, request: LaunchRequest, pool: WorkerPool, market: str,
                         region_name: str, script: str, names: list[str], nodes: list[Node],
                         failures: list[LaunchFailure]) -> None:
        """Launch as many of ``names`` as one region's offers in one market take.

        Each launched node moves a name from ``names`` to ``nodes`` at once, so
        a failure part way keeps what launched.
        """
        region = await self._region(region_name)
        catalog = await self._live_catalog(region, pool)
        try:
            offers = rank(dataclasses.replace(pool, regions=(region_name,), market=market),
                          catalog, self.failures, time.time(), self.settings.failure_cooloff_s)
        except RawCloudError:
            return
        offers = [o for o in offers if o.zone in region.subnets][:MAX_OVERRIDES]
        if not offers:
            return
        group = await self._security_group(region, request.cluster_id)
        template = await self._launch_template(region, request, script, group)
        try:
            batch = 0
            while names:
                count = min(len(names), self.settings.fleet_batch)
                launched = await self._fleet(region, request, template, offers, market, count,
                                             f"{request.token}-{region_name}-{market}-{batch}",
                                             failures)
                for instance_id, instance_type, zone, lifecycle in launched:
                    nodes.append(self._node(request, names.pop(0), instance_id, region_name,
                                            zone, instance_type, lifecycle))
                if len(launched) < count:  # this market in this region has no more to give
                    break
                batch += 1
        finally:
            await self.ec2.call(region_name, "DeleteLaunchTemplate", LaunchTemplateId=template)

    async def _launch_template(self, region: Region, request: LaunchRequest, script: str,
                               group: str) -> str:
        image = next(iter(region.images.values()))
        tags = _tags(request.cluster_id, **{TAG_POOL: request.pool.name, TAG_ROLE: request.role})
        data = {
            "ImageId": image.id,
            "UserData": base64.b64encode(script.encode()).decode(),
            "SecurityGroupIds": [group],
            # The node's agent powers the machine off when it ends: that terminates it.
            "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled",
                                "HttpPutResponseHopLimit": 1},
            "BlockDeviceMappings": [{
                "DeviceName": image.root_device,
                "Ebs": {"VolumeSize": self.settings.root_volume_gib, "VolumeType": "gp3",
                        "Encrypted": True, "DeleteOnTermination": True},
            }],
            "TagSpecifications": _tag_spec("volume", tags),
        }
        response = await self.ec2.call(
            region.name, "CreateLaunchTemplate",
            LaunchTemplateName=f"dask-rawcloud-{request.cluster_id}-{request.token}",
            LaunchTemplateData=data,
            TagSpecifications=_tag_spec("launch-template", tags),
        )
        return response["LaunchTemplate"]["LaunchTemplateId"]

    async def _fleet(self, region: Region, request: LaunchRequest, template: str,
                     offers: list[Offer], market: str, count: int, token: str,
                     failures: list[LaunchFailure]) -> list[tuple[str, str, str, str]]:
        """One instant CreateFleet: (instance id, type, zone id, market) of each instance."""
        zone_of = {subnet: zone for zone, subnet in region.subnets.items()}
        overrides = []
        for priority, o in enumerate(offers):
            arch = self.catalog.types[o.instance_type].arch
            image = region.images.get(arch)
            if image is None:
                continue  # no image for that architecture in this region
            overrides.append({"InstanceType": o.instance_type, "SubnetId": region.subnets[o.zone],
                              "ImageId": image.id, "Priority": float(priority)})
        if not overrides:
            return []
        tags = _tags(request.cluster_id, **{TAG_POOL: request.pool.name, TAG_ROLE: request.role,
                                           TAG_REQUEST: request.token})
        if request.role == "scheduler":
            tags.append({"Key": TAG_PROTOCOL, "Value": "tls" if request.spec.tls_ca else "tcp"})
        capacity = {"TotalTargetCapacity": count, "DefaultTargetCapacityType": market}
        options = ({"SpotOptions": {"AllocationStrategy": self.settings.spot_allocation_strategy}}
                   if market == "spot" else {"OnDemandOptions": {"AllocationStrategy": "prioritized"}})
        response = await self.ec2.call(
            region.name, "CreateFleet",
            Type="instant",
            ClientToken=token,  # a retried call returns the same instances, never more
            LaunchTemplateConfigs=[{
                "LaunchTemplateSpecification": {"LaunchTemplateId": template, "Version": "1"},
                "Overrides": overrides,
            }],
            TargetCapacitySpecification=capacity,
            TagSpecifications=_tag_spec("instance", tags),
            **options,
        )
        for e in response.get("Errors", []):
            chosen = e.get("LaunchTemplateAndOverrides", {}).get("Overrides", {})
            key = (chosen.get("InstanceType", ""), region.name,
                   zone_of.get(chosen.get("SubnetId", ""), ""), e.get("Lifecycle", market))
            error = error_for(e.get("ErrorCode", "Unknown"), e.get("ErrorMessage", ""),
                              "CreateFleet", region.name)
            if isinstance(error, CapacityError):
                self.failures[key] = time.time()
            failures.append(LaunchFailure(request.token, error, 0, key))
            logger.info("launch of %s: %s", key, error)
        launched = []
        for item in response.get("Instances", []):
            chosen = item.get("LaunchTemplateAndOverrides", {}).get("Overrides", {})
            zone = zone_of.get(chosen.get("SubnetId", ""), "")
            for instance_id in item.get("InstanceIds", []):
                launched.append((instance_id, item["InstanceType"], zone,
                                 item.get("Lifecycle", market)))
        return launched

    def _node(self, request: LaunchRequest, name: str, instance_id: str, region: str,
              zone: str, instance_type: str, market: str) -> Node:
        self._where[instance_id] = region
        self._names[instance_id] = name
        return Node(id=instance_id, cluster_id=request.cluster_id, name=name, role=request.role,
                    pool=request.pool.name, state=NodeState.pending, launched_at=time.time(),
                    region=region, zone=zone, instance_type=instance_type, market=market)

    def boot_failed(self, node: Node) -> None:
        if node.instance_type:
            self.failures[(node.instance_type, node.region, node.zone, node.market)] = time.time()

    # -- listing and ending -----------------------------------------------------------
    def _cluster_regions(self) -> list[str]:
        return list(dict.fromkeys([*self.regions, *self._where.values()]))

    async def _instances(self, region: str, filters: list[dict], states: list[str]) -> list[dict]:
        reservations = await self.ec2.pages(
            region, "DescribeInstances", "Reservations",
            Filters=[*filters, {"Name": "instance-state-name", "Values": states}],
        )
        return [i for r in reservations for i in r["Instances"]]

    async def list(self, cluster_id: str) -> list[Node]:
        nodes = []
        for region in self._cluster_regions():
            for i in await self._instances(
                region, [{"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster_id]}], LIVE
            ):
                nodes.append(self._listed(region, i))
        return nodes

    def _listed(self, region: str, i: dict[str, Any]) -> Node:
        tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
        self._where[i["InstanceId"]] = region
        running = i["State"]["Name"] == "running"
        role = tags.get(TAG_ROLE, "worker")
        address = internal = None
        if role == "scheduler" and running and i.get("PrivateIpAddress"):
            scheme, port = tags.get(TAG_PROTOCOL, "tls"), self.settings.scheduler_port
            public = i.get("PublicIpAddress") if self.settings.connect_via == "public" else None
            address = f"{scheme}://{public or i['PrivateIpAddress']}:{port}"
            internal = f"{scheme}://{i['PrivateIpAddress']}:{port}"
        zone = i.get("Placement", {}).get("AvailabilityZone", "")
        if region in self._regions:  # report zone ids, as placement does
            zone = self._regions[region].zone_ids.get(zone, zone)
        return Node(
            id=i["InstanceId"], cluster_id=tags.get(TAG_CLUSTER, ""),
            name=self._names.get(i["InstanceId"], i["InstanceId"]), role=role,
            pool=tags.get(TAG_POOL, ""),
            state=NodeState.running if running else NodeState.pending,
            address=address, internal_address=internal,
            launched_at=i["LaunchTime"].timestamp() if "LaunchTime" in i else 0.0,
            region=region, zone=zone,
            instance_type=i.get("InstanceType", ""), market=i.get("InstanceLifecycle", "on-demand"),
        )

    async def terminate(self, node_ids: Iterable[str]) -> None:
        by_region: dict[str, list[str]] = defaultdict(list)
        for node_id in node_ids:
            if node_id in self._where:
                by_region[self._where[node_id]].append(node_id)
        for region, ids in by_region.items():
            for start in range(0, len(ids), TERMINATE_BATCH):
                await self._terminate(region, ids[start:start + TERMINATE_BATCH])

    async def _terminate(self, region: str, ids: list[str]) -> None:
        try:
            await self.ec2.call(region, "TerminateInstances", InstanceIds=ids)
        except RawCloudError as e:
            if not str(getattr(e, "code", "")).startswith("InvalidInstanceID"):
                raise
            if len(ids) > 1:  # one unknown id fails the whole call: end the others one by one
                for one in ids:
                    await self._terminate(region, [one])

    async def cleanup(self, cluster_id: str, timeout_s: float = 600.0) -> None:
        """Once the cluster's instances are gone, delete its security groups and templates."""
        tag = [{"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster_id]}]
        deadline = time.monotonic() + timeout_s
        for region in self._cluster_regions():
            # A security group cannot be deleted while an instance still uses it.
            pause = 0.2
            while await self._instances(region, tag, NOT_TERMINATED):
                if time.monotonic() > deadline:
                    raise ProviderError(
                        f"instances of cluster {cluster_id} in {region} did not terminate within "
                        f"{timeout_s:g}s; run `dask-rawcloud cleanup --regions {region}` later."
                    )
                await asyncio.sleep(pause)
                pause = min(5.0, pause * 2)
            for template in (await self.ec2.call(region, "DescribeLaunchTemplates",
                                                 Filters=tag))["LaunchTemplates"]:
                await self.ec2.call(region, "DeleteLaunchTemplate",
                                    LaunchTemplateId=template["LaunchTemplateId"])
            for group in (await self.ec2.call(region, "DescribeSecurityGroups",
                                              Filters=tag))["SecurityGroups"]:
                await self._delete_group(region, group["GroupId"], deadline)
            if region in self._regions:
                self._regions[region].security_groups.pop(cluster_id, None)

    async def _delete_group(self, region: str, group: str, deadline: float) -> None:
        while True:
            try:
                await self.ec2.call(region, "DeleteSecurityGroup", GroupId=group)
                return
            except RawCloudError as e:
                code = str(getattr(e, "code", ""))
                if code.startswith("InvalidGroup.NotFound"):
                    return
                if code != "DependencyViolation" or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(2.0)  # network interfaces are still being released

    async def tagged(self) -> dict[str, dict[str, int]]:
        """Every cluster this tool tagged in the provider's regions: counts of what remains."""
        found: defaultdict[str, dict[str, int]] = defaultdict(
            lambda: {"instances": 0, "security_groups": 0, "launch_templates": 0})
        tag = [{"Name": "tag-key", "Values": [TAG_CLUSTER]}]
        for region in self._cluster_regions():
            for i in await self._instances(region, tag, NOT_TERMINATED):
                self._where[i["InstanceId"]] = region
                found[_cluster_tag(i)]["instances"] += 1
            for g in (await self.ec2.call(region, "DescribeSecurityGroups",
                                          Filters=tag))["SecurityGroups"]:
                found[_cluster_tag(g)]["security_groups"] += 1
            for t in (await self.ec2.call(region, "DescribeLaunchTemplates",
                                          Filters=tag))["LaunchTemplates"]:
                found[_cluster_tag(t)]["launch_templates"] += 1
        return dict(found)

    async def remove(self, cluster_id: str) -> int:
        """Terminate every instance tagged for the cluster, stopped ones too, then clean up.

        What ``dask-rawcloud cleanup`` does for a cluster whose creator is gone.
        Returns the number of instances terminated.
        """
        tag = [{"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster_id]}]
        ids = []
        for region in self._cluster_regions():
            for i in await self._instances(region, tag, NOT_TERMINATED):
                self._where[i["InstanceId"]] = region
                ids.append(i["InstanceId"])
        await self.terminate(ids)
        await self.cleanup(cluster_id)
        return len(ids)

    async def logs(self, node_id: str, lines: int = 40) -> str:
        region = self._where.get(node_id)
        if region is None:
            return ""
        try:
            output = (await self.ec2.call(region, "GetConsoleOutput", InstanceId=node_id,
                                          Latest=True)).get("Output", "")
        except RawCloudError:
            return ""
        # botocore decodes the console output's base64 itself.
        return "\n".join((output or "").splitlines()[-lines:])

    async def close(self) -> None:
        await self.ec2.close()


def _cluster_tag(resource: dict[str, Any]) -> str:
    return next((t["Value"] for t in resource.get("Tags", []) if t["Key"] == TAG_CLUSTER), "")

