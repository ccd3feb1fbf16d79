"""What a cluster would run on and cost, before anything is created: ``dask-rawcloud plan``.

Offers come from placement over the bundled catalog, so a plan needs no
account. With credentials, the provider first checks the live offerings and
spot prices of the candidate types in each region (read-only Describe calls).
Prices at a pool's minimum and maximum are for its cheapest offer; a large
pool spread over several offers costs a little more.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import math
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import RawCloudError
from .model import SCHEDULER_POOL, WorkerPool
from .policy.placement import Offer
from .providers import get_provider

__all__ = ["Plan", "PoolPlan", "make_plan", "plan"]

T = TypeVar("T")


def _usd(offers: Sequence[Offer], workers: float) -> float | None:
    """USD per hour for ``workers`` on the cheapest offer (None: no upper bound)."""
    if not math.isfinite(workers):
        return None
    if not offers or workers == 0:
        return 0.0
    best = offers[0]
    return math.ceil(workers / best.workers_per_instance) * best.price_per_hour


def _offer_json(o: Offer) -> dict[str, Any]:
    return {"instance_type": o.instance_type, "region": o.region, "zone": o.zone,
            "market": o.market, "price_per_hour": round(o.price_per_hour, 6),
            "workers_per_instance": o.workers_per_instance}


@dataclass(frozen=True)
class PoolPlan:
    pool: WorkerPool
    offers: tuple[Offer, ...]

    @property
    def usd_per_hour_min(self) -> float:
        return _usd(self.offers, self.pool.minimum) or 0.0

    @property
    def usd_per_hour_max(self) -> float | None:
        return _usd(self.offers, self.pool.maximum)

    def to_json(self) -> dict[str, Any]:
        p = self.pool
        return {
            "name": p.name, "cpu": p.cpu, "memory": p.memory, "gpu": p.gpu, "arch": p.arch,
            "market": p.market, "minimum": p.minimum,
            "maximum": p.maximum if math.isfinite(p.maximum) else None,
            "offers": [_offer_json(o) for o in self.offers],
            "usd_per_hour_min": self.usd_per_hour_min,
            "usd_per_hour_max": self.usd_per_hour_max,
        }


@dataclass(frozen=True)
class Plan:
    """The offers per pool and the cost at minimum and maximum size."""

    provider: str
    pools: tuple[PoolPlan, ...]
    scheduler: tuple[Offer, ...]
    live: bool  # offerings and spot prices were checked with the cloud
    live_error: str | None  # why they were not, when credentials were there
    catalog_built: str
    catalog_age_days: int | None

    @property
    def usd_per_hour_min(self) -> float:
        return _usd(self.scheduler, 1) + sum(p.usd_per_hour_min for p in self.pools)

    @property
    def usd_per_hour_max(self) -> float | None:
        maxima = [p.usd_per_hour_max for p in self.pools]
        return None if None in maxima else _usd(self.scheduler, 1) + sum(maxima)

    def to_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "live": self.live,
            "live_error": self.live_error,
            "catalog": {"built": self.catalog_built, "age_days": self.catalog_age_days},
            "scheduler": {"offers": [_offer_json(o) for o in self.scheduler[:1]],
                          "usd_per_hour": _usd(self.scheduler, 1)},
            "pools": [p.to_json() for p in self.pools],
            "usd_per_hour_min": self.usd_per_hour_min,
            "usd_per_hour_max": self.usd_per_hour_max,
        }

    def __rich__(self) -> Any:
        from rich.console import Group

        return Group(*self.renderables())

    def renderables(self, offers_shown: int = 8) -> list[Any]:
        from rich.table import Table

        out: list[Any] = [self._source()]
        for p in self.pools:
            pool = p.pool
            size = f"{pool.minimum}..{_bound(pool.maximum)} workers"
            table = Table(title=f"pool {pool.name}: {pool.describe()}"
                                f"{', ' + pool.arch if pool.arch else ''}, {pool.market}, {size}",
                          title_justify="left")
            for column in ("type", "region", "zone", "market", "$/h", "per node",
                           "$/worker-h"):
                table.add_column(column, justify="right" if "$" in column else "left")
            for o in p.offers[:offers_shown]:
                table.add_row(o.instance_type, o.region, o.zone or "any", o.market,
                              f"{o.price_per_hour:.4f}", str(o.workers_per_instance),
                              f"{o.price_per_worker_hour:.4f}")
            if len(p.offers) > offers_shown:
                table.caption = f"and {len(p.offers) - offers_shown} more offers (--json lists all)"
            out += [table, f"  $/hour at minimum {_money(p.usd_per_hour_min)}, "
                           f"at maximum {_money(p.usd_per_hour_max)}"]
        if self.scheduler:
            s = self.scheduler[0]
            out.append(f"scheduler: {s.instance_type} {s.market} in {s.region}, "
                       f"{_money(s.price_per_hour)}/hour")
        out.append(f"whole cluster: {_money(self.usd_per_hour_min)}/hour at minimum, "
                   f"{_money(self.usd_per_hour_max)}/hour at maximum")
        return out

    def _source(self) -> str:
        if self.provider == "local":
            return "local provider: nodes are processes on this machine"
        age = (f", {self.catalog_age_days} day{'s' if self.catalog_age_days != 1 else ''} old"
               if self.catalog_age_days is not None else "")
        bundled = f"prices from the bundled catalog of {self.catalog_built or 'unknown date'}{age}"
        if self.live:
            return f"{bundled}; offerings and spot prices checked live"
        if self.live_error:
            return f"{bundled}; the live check failed: {self.live_error}"
        return f"{bundled}; no credentials, so offerings were not checked live"


def _bound(n: float) -> str:
    return str(int(n)) if math.isfinite(n) else "unbounded"


def _money(usd: float | None) -> str:
    return "unbounded (set a maximum)" if usd is None else f"${usd:.4f}"


async def make_plan(pools: Sequence[WorkerPool], provider: str = "aws",
                    live: bool | None = None, **provider_options: Any) -> Plan:
    """Plan ``pools`` on ``provider``. ``live=None`` checks live when credentials exist."""
    p = get_provider(provider, **provider_options)
    try:
        for pool in pools:
            p.check(pool)  # an impossible pool fails here, naming the largest type
        p.check(SCHEDULER_POOL, role="scheduler")
        checked, error = False, None
        if live is not False and (live or p.can_check_live()):
            try:
                for pool in pools:
                    await p.offers(pool, live=True)
                await p.offers(SCHEDULER_POOL, role="scheduler", live=True)
                checked = True
            except RawCloudError as e:
                if live:
                    raise
                error = str(e)
        catalog = getattr(p, "catalog", None)
        planned = [PoolPlan(pool, tuple(await p.offers(pool))) for pool in pools]
        return Plan(
            provider=provider,
            pools=tuple(planned),
            scheduler=tuple(await p.offers(SCHEDULER_POOL, role="scheduler")),
            live=checked,
            live_error=error,
            catalog_built=catalog.built if catalog else "",
            catalog_age_days=catalog.age_days(datetime.date.today()) if catalog else None,
        )
    finally:
        await p.close()


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion, also from a notebook whose event loop is running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def plan(pools: Sequence[WorkerPool], provider: str = "aws", **options: Any) -> Plan:
    """Synchronous ``make_plan``."""
    return run_sync(make_plan(pools, provider, **options))
