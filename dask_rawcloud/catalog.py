"""Instance types with their specs and prices: what placement chooses from.

Specs and prices come from a snapshot bundled with the package
(``data/aws_catalog.json``), built from a public price catalog. A provider
may overlay live facts (DescribeInstanceTypes, spot price history), but only
plausible ones: a spot price must lie between 5 % and 100 % of on-demand.

Refresh the snapshot with::

    python -m dask_rawcloud.catalog build path/to/aws-vms.csv

(the CSV of the SkyPilot catalog: InstanceType, AcceleratorName,
AcceleratorCount, vCPUs, MemoryGiB, GpuInfo, Price, SpotPrice, Region,
AvailabilityZone, Arch). Local Zones (opt-in, few types) and spot prices
above on-demand are left out when building.
"""

from __future__ import annotations

import ast
import csv
import gzip
import hashlib
import json
import pathlib
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["Catalog", "InstanceType", "Prices", "plausible_spot"]

SNAPSHOT = pathlib.Path(__file__).with_name("data") / "aws_catalog.json.gz"
GIB = 2**30


@dataclass(frozen=True)
class InstanceType:
    name: str
    cpu: int
    memory: int  # bytes
    arch: str = "x86_64"
    gpus: int = 0
    gpu_model: str | None = None
    gpu_memory: int = 0  # bytes per GPU


@dataclass(frozen=True)
class Prices:
    """USD per hour of one instance type in one region."""

    on_demand: float
    spot: Mapping[str, float] = field(default_factory=dict)  # zone id -> price


def plausible_spot(spot: float, on_demand: float) -> bool:
    """Spot prices outside 5-100 % of on-demand are errors (or an emulator's placeholder)."""
    return 0.05 * on_demand <= spot <= on_demand


@dataclass(frozen=True)
class Catalog:
    types: Mapping[str, InstanceType]
    prices: Mapping[str, Mapping[str, Prices]]  # region -> type -> prices
    source: str = ""

    @classmethod
    def bundled(cls) -> Catalog:
        return cls.from_json(json.loads(gzip.decompress(SNAPSHOT.read_bytes())))

    @classmethod
    def from_json(cls, data: dict) -> Catalog:
        types = {
            name: InstanceType(name, t["cpu"], int(t["memory_gib"] * GIB), t["arch"], t["gpus"],
                               t["gpu_model"], int(t["gpu_memory_gib"] * GIB))
            for name, t in data["types"].items()
        }
        prices = {
            region: {name: Prices(p["on_demand"], p["spot"]) for name, p in by_type.items()}
            for region, by_type in data["prices"].items()
        }
        return cls(types, prices, data.get("source", ""))

    def regions(self) -> list[str]:
        return sorted(self.prices)

    def with_spot(self, region: str, live: Iterable[tuple[str, str, float]]) -> Catalog:
        """A copy with live (type, zone id, price) spot prices, where plausible."""
        by_type = dict(self.prices.get(region, {}))
        for name, zone, price in live:
            current = by_type.get(name)
            if current is not None and plausible_spot(price, current.on_demand):
                by_type[name] = Prices(current.on_demand, {**current.spot, zone: price})
        return Catalog(self.types, {**self.prices, region: by_type}, self.source)


def _local_zone(zone_id: str) -> bool:
    return zone_id.count("-") > 1  # use1-atl2-az1: a Local Zone, opt-in only


def build(csv_path: pathlib.Path) -> dict:
    """The snapshot's JSON from a catalog CSV."""
    types: dict[str, dict] = {}
    prices: dict[str, dict[str, dict]] = {}
    raw = csv_path.read_bytes()
    for row in csv.DictReader(raw.decode().splitlines()):
        name, region, zone = row["InstanceType"], row["Region"], row["AvailabilityZone"]
        if _local_zone(zone):
            continue
        gpu_memory = 0.0
        if row["GpuInfo"]:
            info = ast.literal_eval(row["GpuInfo"])
            gpu_memory = info["Gpus"][0]["MemoryInfo"]["SizeInMiB"] / 1024
        types[name] = {
            "cpu": int(float(row["vCPUs"])),
            "memory_gib": float(row["MemoryGiB"]),
            "arch": row["Arch"] or "x86_64",
            "gpus": int(float(row["AcceleratorCount"] or 0)),
            "gpu_model": row["AcceleratorName"] or None,
            "gpu_memory_gib": gpu_memory,
        }
        entry = prices.setdefault(region, {}).setdefault(
            name, {"on_demand": float(row["Price"]), "spot": {}}
        )
        if row["SpotPrice"] and plausible_spot(float(row["SpotPrice"]), entry["on_demand"]):
            entry["spot"][zone] = float(row["SpotPrice"])
    return {
        "source": f"{csv_path.name} sha256 {hashlib.sha256(raw).hexdigest()[:16]}",
        "types": types,
        "prices": prices,
    }


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[0] != "build":
        sys.exit("usage: python -m dask_rawcloud.catalog build CSV")
    data = build(pathlib.Path(argv[1]))
    SNAPSHOT.parent.mkdir(exist_ok=True)
    SNAPSHOT.write_bytes(gzip.compress(json.dumps(data, sort_keys=True).encode(), mtime=0))
    print(f"{SNAPSHOT}: {len(data['types'])} types, {len(data['prices'])} regions, "
          f"{SNAPSHOT.stat().st_size} bytes, from {data['source']}")


if __name__ == "__main__":
    main(sys.argv[1:])
