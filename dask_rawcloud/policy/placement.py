"""Which instance types, regions, zones and markets serve a pool, cheapest first.

Pure: the catalog, the recent launch failures and ``now`` come in; ranked
offers come out. Users ask for resources ("4 cpu, 16 GiB, spot if possible,
in us-east-1 or us-west-2"); this turns that into what a cloud can launch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dask.utils import format_bytes

from ..catalog import Catalog, InstanceType
from ..errors import NodeTooLarge
from ..model import WorkerPool

__all__ = ["FailureKey", "Offer", "markets", "rank", "workers_per_instance"]

#: (instance type, region, zone id, market) of a launch that failed.
FailureKey = tuple[str, str, str, str]


@dataclass(frozen=True)
class Offer:
    instance_type: str
    region: str
    zone: str  # zone id, e.g. use1-az4
    market: str  # "spot" or "on-demand"
    price_per_hour: float  # one instance
    workers_per_instance: int = 1

    @property
    def price_per_worker_hour(self) -> float:
        return self.price_per_hour / self.workers_per_instance

    @property
    def key(self) -> FailureKey:
        return (self.instance_type, self.region, self.zone, self.market)


def workers_per_instance(t: InstanceType, pool: WorkerPool, limit: int) -> int:
    """How many of the pool's workers the type holds (0: none)."""
    if pool.arch and t.arch != pool.arch:
        return 0
    if pool.gpu_model and (t.gpu_model or "").lower() != pool.gpu_model.lower():
        return 0
    fits = [t.cpu // pool.cpu, t.memory // pool.memory]
    if pool.gpu:
        fits.append(t.gpus // pool.gpu)
    return max(0, min(limit, *fits))


def burstable(name: str) -> bool:
    """t3, t3a, t4g: CPU credits throttle (or bill extra for) sustained Dask work."""
    family = name.split(".")[0]
    return family.startswith("t") and family[1:2].isdigit()


def markets(market: str) -> tuple[str, ...]:
    """The markets a pool's ``market`` allows, in the order to try them."""
    return {"spot": ("spot",), "on-demand": ("on-demand",),
            "spot_with_fallback": ("spot", "on-demand")}[market]


def rank(
    pool: WorkerPool,
    catalog: Catalog,
    failures: Mapping[FailureKey, float] | None = None,
    now: float = 0.0,
    cooloff_s: float = 300.0,
    max_workers_per_instance: int = 1,
) -> list[Offer]:
    """Offers for ``pool``, cheapest per worker first; recent failures last.

    Spot comes before on-demand when the pool allows both. At most
    ``pool.max_types`` instance types are offered. Raises ``NodeTooLarge``
    when nothing in the allowed regions can hold a worker.
    """
    failures = failures or {}
    regions = pool.regions or tuple(catalog.regions())
    allowed_markets = markets(pool.market)
    offers = []
    for region in regions:
        for name, prices in catalog.prices.get(region, {}).items():
            if pool.instance_types:
                if name not in pool.instance_types:
                    continue
            elif burstable(name):
                continue  # only when asked for by name
            k = workers_per_instance(catalog.types[name], pool, max_workers_per_instance)
            if not k:
                continue
            if "spot" in allowed_markets:
                offers += [Offer(name, region, z, "spot", p, k) for z, p in prices.spot.items()]
            if "on-demand" in allowed_markets:
                zones = prices.zones or ("",)
                offers += [Offer(name, region, z, "on-demand", prices.on_demand, k) for z in zones]
    if not offers:
        raise NodeTooLarge(_nothing_fits(pool, catalog, regions))

    def order(o: Offer) -> tuple:
        failed_at = failures.get(o.key)
        cooling = failed_at is not None and now - failed_at < cooloff_s
        return (cooling, allowed_markets.index(o.market), o.price_per_worker_hour,
                o.workers_per_instance, o.instance_type, o.region, o.zone)

    offers.sort(key=order)
    allowed: list[str] = []
    for o in offers:
        if o.instance_type not in allowed and len(allowed) < pool.max_types:
            allowed.append(o.instance_type)
    return [o for o in offers if o.instance_type in allowed]


def _nothing_fits(pool: WorkerPool, catalog: Catalog, regions: tuple[str, ...]) -> str:
    names = {n for r in regions for n in catalog.prices.get(r, {})}
    if pool.instance_types:
        names &= set(pool.instance_types)
    where = ", ".join(regions) or "no region"
    if not names:
        return (f"no instance type is offered in {where} for pool {pool.name!r}"
                f"{' among ' + ', '.join(pool.instance_types) if pool.instance_types else ''}. "
                f"Known regions: {', '.join(catalog.regions())}.")
    largest = max((catalog.types[n] for n in names), key=lambda t: (t.memory, t.cpu, t.gpus))
    gpu = f", {largest.gpus} x {largest.gpu_model}" if largest.gpus else ""
    return (
        f"no instance type in {where} can hold a worker of {pool.describe()}"
        f"{', arch ' + pool.arch if pool.arch else ''} (pool {pool.name!r}); the largest there is "
        f"{largest.name} ({largest.cpu} cpu, {format_bytes(largest.memory)}{gpu}). "
        "Ask for less per worker, or allow other regions or types."
    )
