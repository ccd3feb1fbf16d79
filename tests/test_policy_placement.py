"""Placement as tables: pool and catalog in, ranked offers out."""

from __future__ import annotations

import pytest

from dask_rawcloud import NodeTooLarge, WorkerPool
from dask_rawcloud.catalog import GIB, Catalog, InstanceType, Prices, build, plausible_spot
from dask_rawcloud.policy.placement import rank

TYPES = {
    "m.large": InstanceType("m.large", 2, 8 * GIB),
    "m.xlarge": InstanceType("m.xlarge", 4, 16 * GIB),
    "c.xlarge": InstanceType("c.xlarge", 4, 8 * GIB),
    "a.xlarge": InstanceType("a.xlarge", 4, 16 * GIB, arch="arm64"),
    "t3.xlarge": InstanceType("t3.xlarge", 4, 16 * GIB),
    "g.xlarge": InstanceType("g.xlarge", 4, 16 * GIB, gpus=1, gpu_model="A10G"),
    "g.12xlarge": InstanceType("g.12xlarge", 48, 192 * GIB, gpus=4, gpu_model="A10G"),
}
CATALOG = Catalog(
    TYPES,
    {
        "east": {
            "m.large": Prices(0.10, {"e1": 0.04}),
            "m.xlarge": Prices(0.20, {"e1": 0.09, "e2": 0.07}),
            "c.xlarge": Prices(0.17, {"e1": 0.06}),
            "a.xlarge": Prices(0.15, {"e1": 0.05}),
            "t3.xlarge": Prices(0.16, {"e1": 0.03}),
            "g.xlarge": Prices(1.00, {"e1": 0.40}),
            "g.12xlarge": Prices(5.60, {}),
        },
        "west": {
            "m.xlarge": Prices(0.22, {"w1": 0.05}),
        },
    },
)


def offers(pool, **kwargs):
    return [(o.instance_type, o.region, o.zone, o.market, o.price_per_hour) for o in rank(pool, CATALOG, **kwargs)]


def test_cheapest_fitting_type_first_and_burstable_left_out():
    pool = WorkerPool("w", cpu=4, memory="16GiB", market="on-demand", regions=("east",), arch="x86_64")
    assert offers(pool) == [
        ("m.xlarge", "east", "e1", "on-demand", 0.20),
        ("m.xlarge", "east", "e2", "on-demand", 0.20),
        ("g.xlarge", "east", "e1", "on-demand", 1.00),
        ("g.12xlarge", "east", "", "on-demand", 5.60),
    ]


def test_spot_across_regions_then_on_demand_fallback():
    pool = WorkerPool("w", cpu=4, memory="16GiB", market="spot_with_fallback", arch="x86_64",
                      regions=("east", "west"), max_types=1)
    got = offers(pool)
    assert got[:3] == [
        ("m.xlarge", "west", "w1", "spot", 0.05),
        ("m.xlarge", "east", "e2", "spot", 0.07),
        ("m.xlarge", "east", "e1", "spot", 0.09),
    ]
    assert [o[3] for o in got[3:]] == ["on-demand"] * 3
    assert got[3] == ("m.xlarge", "east", "e1", "on-demand", 0.20)


def test_a_recent_failure_pushes_an_offer_down_until_the_cooloff_ends():
    pool = WorkerPool("w", cpu=4, memory="16GiB", market="spot", regions=("east",), arch="x86_64", max_types=1)
    failures = {("m.xlarge", "east", "e2", "spot"): 100.0}
    assert offers(pool, failures=failures, now=150, cooloff_s=300)[0][2] == "e1"
    assert offers(pool, failures=failures, now=401, cooloff_s=300)[0][2] == "e2"


def test_gpu_model_arch_and_allow_list():
    gpu = WorkerPool("g", cpu=4, memory="16GiB", gpu=1, gpu_model="a10g", market="spot", regions=("east",))
    assert offers(gpu) == [("g.xlarge", "east", "e1", "spot", 0.40)]
    arm = WorkerPool("a", cpu=2, memory="8GiB", arch="arm64", regions=("east",))
    assert [o[0] for o in offers(arm)] == ["a.xlarge"]
    burst = WorkerPool("t", cpu=4, memory="8GiB", instance_types=("t3.xlarge",), market="spot")
    assert offers(burst) == [("t3.xlarge", "east", "e1", "spot", 0.03)]


def test_several_workers_per_instance_are_priced_per_worker():
    pool = WorkerPool("g", cpu=4, memory="16GiB", gpu=1, regions=("east",), max_types=2)
    ranked = rank(pool, CATALOG, max_workers_per_instance=8)
    big = next(o for o in ranked if o.instance_type == "g.12xlarge")
    assert big.workers_per_instance == 4 and big.price_per_worker_hour == pytest.approx(1.40)


def test_a_request_nothing_can_hold_names_the_largest_type():
    with pytest.raises(NodeTooLarge, match=r"4 cpu, 1.00 TiB.*largest there is g.12xlarge \(48 cpu"):
        rank(WorkerPool("huge", cpu=4, memory="1TiB", regions=("east",)), CATALOG)
    with pytest.raises(NodeTooLarge, match="no instance type is offered in mars"):
        rank(WorkerPool("w", regions=("mars",)), CATALOG)


def test_bundled_snapshot_is_sane():
    c = Catalog.bundled()
    assert set(c.regions()) == {"us-east-1", "us-east-2", "us-west-2", "eu-west-1"}
    assert c.types["g5.xlarge"].gpus == 1 and c.types["g5.xlarge"].gpu_model == "A10G"
    for by_type in c.prices.values():
        for prices in by_type.values():
            for zone, spot in prices.spot.items():
                assert zone.count("-") == 1, "no Local Zones"
                assert plausible_spot(spot, prices.on_demand)
    ranked = rank(WorkerPool("w", cpu=4, memory="16GiB", market="spot", regions=("us-east-1",)), c)
    assert ranked[0].price_per_hour < c.prices["us-east-1"]["m6i.xlarge"].on_demand


def test_live_spot_prices_are_used_only_when_plausible():
    live = CATALOG.with_spot("east", [("m.xlarge", "e3", 0.00001), ("m.xlarge", "e4", 0.08)])
    assert live.prices["east"]["m.xlarge"].spot == {"e1": 0.09, "e2": 0.07, "e4": 0.08}


def test_building_drops_local_zones_and_implausible_spot(tmp_path):
    csv = tmp_path / "vms.csv"
    csv.write_text(
        "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region,AvailabilityZone,Arch\n"
        "m6i.xlarge,,,4.0,16.0,,0.192,0.07,us-east-1,use1-az1,x86_64\n"
        "m6i.xlarge,,,4.0,16.0,,0.192,0.30,us-east-1,use1-az2,x86_64\n"
        "m6i.xlarge,,,4.0,16.0,,0.192,,us-east-1,use1-az4,x86_64\n"
        "m6i.xlarge,,,4.0,16.0,,0.23,0.05,us-east-1,use1-atl2-az1,x86_64\n"
    )
    data = build(csv, "2026-12-05")
    # Offered on demand in every regular zone; spot only where its price is plausible.
    assert data["prices"]["us-east-1"]["m6i.xlarge"] == {
        "on_demand": 0.192, "spot": {"use1-az1": 0.07}, "zones": ["use1-az1", "use1-az2", "use1-az4"]
    }
    assert data["built"] == "2026-12-05"
