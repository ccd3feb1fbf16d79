"""Instance types with their specs and prices: what placement chooses from.

Specs and prices come from a snapshot bundled with the package
(``data/aws_catalog.json.gz``), built from a public price catalog. A provider
overlays live facts on it (``with_types``, ``with_offerings``, ``with_spot``),
but only plausible ones: a spot price must lie between 5 % and 100 % of
on-demand, so an emulator's placeholder price never wins over the snapshot.

Refresh the snapshot with::

    python -m dask_rawcloud.catalog build path/to/aws-vms.csv [YYYY-MM-DD]

where the date is when the CSV's prices were read (default: today).
(the CSV of the SkyPilot catalog: InstanceType, AcceleratorName,
AcceleratorCount, vCPUs, MemoryGiB, GpuInfo, Price, SpotPrice, Region,
AvailabilityZone, Arch). Local Zones (opt-in, few types) and spot prices
above on-demand are left out when building.
"""

from __future__ import annotations

import ast
import csv
import datetime
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
    zones: tuple[str, ...] = ()  # zone ids where the type is offered

    def __post_init__(self) -> None:
        if not self.zones:
            object.__setattr__(self, "zones", tuple(sorted(self.spot)))


def plausible_spot(spot: float, on_demand: float) -> bool:
    """Spot prices outside 5-100 % of on-demand are errors (or an emulator's placeholder)."""
    return 0.05 * on_demand <= spot <= on_demand


@dataclass(frozen=True)
class Catalog:
    types: Mapping[str, InstanceType]
    prices: Mapping[str, Mapping[str, Prices]]  # region -> type -> prices
    source: str = ""
    built: str = ""  # ISO date the snapshot was built: spot prices are as old as this

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
            region: {
                name: Prices(p["on_demand"], p["spot"], tuple(p.get("zones", ())))
                for name, p in by_type.items()
            }
            for region, by_type in data["prices"].items()
        }
        return cls(types, prices, data.get("source", ""), data.get("built", ""))

    def age_days(self, today: datetime.date) -> int | None:
        """How old the bundled prices are, for ``plan`` to say."""
        if not self.built:
            return None
        return (today - datetime.date.fromisoformat(self.built)).days

    def regions(self) -> list[str]:
        return sorted(self.prices)

    def _replace(self, region: str, by_type: Mapping[str, Prices], types=None) -> Catalog:
        return Catalog(types or self.types, {**self.prices, region: by_type}, self.source,
                       self.built)

    def with_spot(self, region: str, live: Iterable[tuple[str, str, float]]) -> Catalog:
        """A copy with live (type, zone id, price) spot prices, where plausible."""
        by_type = dict(self.prices.get(region, {}))
        for name, zone, price in live:
            current = by_type.get(name)
            if current is not None and plausible_spot(price, current.on_demand):
                by_type[name] = Prices(current.on_demand, {**current.spot, zone: price},
                                       current.zones)
        return self._replace(region, by_type)

    def with_types(self, live: Iterable[InstanceType]) -> Catalog:
        """A copy whose specs are the cloud's own, for the types it described."""
        return Catalog({**self.types, **{t.name: t for t in live}}, self.prices, self.source,
                       self.built)

    def with_offerings(self, region: str, offered: Mapping[str, Iterable[str]]) -> Catalog:
        """A copy where each looked-up type is offered only in the zones the cloud listed.

        ``offered`` maps type -> zone ids. A type the cloud does not offer in
        the region disappears from it; a type it offers that the snapshot
        lacks keeps no price, so it is never chosen by price it does not have.
        """
        by_type = dict(self.prices.get(region, {}))
        for name, zones in offered.items():
            current = by_type.get(name)
            if current is None:
                continue
            zones = tuple(sorted(zones))
            if not zones:
                del by_type[name]
                continue
            spot = {z: p for z, p in current.spot.items() if z in zones}
            by_type[name] = Prices(current.on_demand, spot, zones)
        return self._replace(region, by_type)


def _local_zone(zone_id: str) -> bool:
    return zone_id.count("-") > 1  # use1-atl2-az1: a Local Zone, opt-in only


def build(csv_path: pathlib.Path, built: str | None = None) -> dict:
    """The snapshot's JSON from a catalog CSV; ``built`` is the date its prices were read."""
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
            name, {"on_demand": float(row["Price"]), "spot": {}, "zones": []}
        )
        entry["zones"].append(zone)
        if row["SpotPrice"] and plausible_spot(float(row["SpotPrice"]), entry["on_demand"]):
            entry["spot"][zone] = float(row["SpotPrice"])
    for by_type in prices.values():
        for entry in by_type.values():
            entry["zones"] = sorted(set(entry["zones"]))
    return {
        "source": f"{csv_path.name} sha256 {hashlib.sha256(raw).hexdigest()[:16]}",
        "built": built or datetime.date.today().isoformat(),
        "types": types,
        "prices": prices,
    }


def main(argv: list[str]) -> None:
    if len(argv) not in (2, 3) or argv[0] != "build":
        sys.exit("usage: python -m dask_rawcloud.catalog build CSV [YYYY-MM-DD]")
    data = build(pathlib.Path(argv[1]), argv[2] if len(argv) == 3 else None)
    SNAPSHOT.parent.mkdir(exist_ok=True)
    SNAPSHOT.write_bytes(gzip.compress(json.dumps(data, sort_keys=True).encode(), mtime=0))
    print(f"{SNAPSHOT}: {len(data['types'])} types, {len(data['prices'])} regions, "
          f"{SNAPSHOT.stat().st_size} bytes, from {data['source']}")


if __name__ == "__main__":
    main(sys.argv[1:])
