"""Defaults for ``rawcloud.*`` in dask.config, and one typed view of them.

Users set values in a dask yaml file, with ``dask.config.set`` or with
``DASK_RAWCLOUD__...`` environment variables. Code reads them through
:func:`settings`, once per cluster, never with scattered ``dask.config.get``.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass

import dask.config
import yaml
from dask.utils import parse_bytes, parse_timedelta

_defaults_file = pathlib.Path(__file__).with_name("rawcloud.yaml")
dask.config.update_defaults(yaml.safe_load(_defaults_file.read_text()))


def _seconds(value) -> float | None:
    """A timedelta setting in seconds; null, 0 or "off" turn a watchdog off."""
    if value in (None, False, 0, "0", "off", "none", "None"):
        return None
    return float(parse_timedelta(value))


@dataclass(frozen=True)
class Settings:
    provider: str
    state_dir: pathlib.Path
    tls: bool
    worker_cpu: int
    worker_memory: int
    worker_death_timeout_s: float
    worker_nanny: bool
    dashboard: bool
    idle_timeout_s: float | None
    no_client_timeout_s: float | None
    max_lifetime_s: float | None
    boot_timeout_s: float | None  # None: the provider's own
    node_watch_interval_s: float
    max_boot_failures: int
    local_boot_timeout_s: float
    local_terminate_grace_s: float
    local_boot_delay_s: float
    local_billing_minimum_s: float
    local_billing_increment_s: float
    local_price_per_hour: float


def default_state_dir() -> pathlib.Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return pathlib.Path(runtime) / "dask-rawcloud"
    return pathlib.Path.home() / ".local" / "state" / "dask-rawcloud"


def settings() -> Settings:
    """Read ``rawcloud.*`` once into a typed, frozen value."""
    def get(key: str):
        # dask.config.get canonicalises '-' and '_', so env variables such as
        # DASK_RAWCLOUD__STATE_DIR reach "rawcloud.state-dir".
        return dask.config.get(f"rawcloud.{key}")

    state_dir = get("state-dir")
    return Settings(
        provider=get("provider"),
        state_dir=pathlib.Path(state_dir).expanduser() if state_dir else default_state_dir(),
        tls=bool(get("tls")),
        worker_cpu=get("worker.cpu"),
        worker_memory=parse_bytes(get("worker.memory")),
        worker_death_timeout_s=float(parse_timedelta(get("worker.death-timeout"))),
        worker_nanny=bool(get("worker.nanny")),
        dashboard=bool(get("scheduler.dashboard")),
        idle_timeout_s=_seconds(get("scheduler.idle-timeout")),
        no_client_timeout_s=_seconds(get("scheduler.no-client-timeout")),
        max_lifetime_s=_seconds(get("scheduler.max-lifetime")),
        boot_timeout_s=_seconds(get("boot-timeout")),
        node_watch_interval_s=float(parse_timedelta(get("node-watch-interval"))),
        max_boot_failures=int(get("max-boot-failures")),
        local_boot_timeout_s=float(parse_timedelta(get("local.boot-timeout"))),
        local_terminate_grace_s=float(parse_timedelta(get("local.terminate-grace"))),
        local_boot_delay_s=float(parse_timedelta(get("local.boot-delay"))),
        local_billing_minimum_s=float(parse_timedelta(get("local.billing.minimum"))),
        local_billing_increment_s=float(parse_timedelta(get("local.billing.increment"))),
        local_price_per_hour=float(get("local.billing.price-per-hour")),
    )


@dataclass(frozen=True)
class AWSSettings:
    region: str
    endpoint_url: str | None
    image: str | None
    packages: tuple[str, ...]
    scheduler_instance_type: str
    scheduler_market: str
    client_cidr: str | None
    scheduler_port: int
    dashboard_port: int
    connect_via: str
    root_volume_gib: int
    fleet_batch: int
    spot_allocation_strategy: str
    max_attempts: int
    failure_cooloff_s: float
    boot_timeout_s: float
    spot_notice_poll_s: float
    billing_minimum_s: float


def aws_settings() -> AWSSettings:
    """Read ``rawcloud.aws.*`` once."""
    def get(key: str):
        return dask.config.get(f"rawcloud.aws.{key}")

    return AWSSettings(
        region=get("region"),
        endpoint_url=get("endpoint-url"),
        image=get("image"),
        packages=tuple(get("packages") or ()),
        scheduler_instance_type=get("scheduler-instance-type"),
        scheduler_market=get("scheduler-market"),
        client_cidr=get("client-cidr"),
        scheduler_port=int(get("scheduler-port")),
        dashboard_port=int(get("dashboard-port")),
        connect_via=get("connect-via"),
        root_volume_gib=int(get("root-volume-gib")),
        fleet_batch=int(get("fleet-batch")),
        spot_allocation_strategy=get("spot-allocation-strategy"),
        max_attempts=int(get("max-attempts")),
        failure_cooloff_s=float(parse_timedelta(get("failure-cooloff"))),
        boot_timeout_s=float(parse_timedelta(get("boot-timeout"))),
        spot_notice_poll_s=float(parse_timedelta(get("spot-notice-poll"))),
        billing_minimum_s=float(parse_timedelta(get("billing-minimum"))),
    )
