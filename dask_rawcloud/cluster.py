"""RawCloudCluster: a SpecCluster whose scheduler and workers are provider nodes."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import numbers
import os
import secrets
import time
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

import dask.config
from dask.utils import parse_bytes
from distributed.core import Status
from distributed.deploy.spec import ProcessInterface, SpecCluster
from distributed.security import Security
from distributed.utils import NoOpAwaitable
from tornado.ioloop import PeriodicCallback

from .adaptive import RawCloudAdaptive, _is_number
from .config import Settings, settings
from .errors import BootError, ClusterExists, InvalidRequest, LaunchError, RawCloudError
from .launcher import ClusterIdentity, NodeLauncher
from .model import SCHEDULER_POOL, Node, NodeState, WorkerPool
from .nodewatch import NodeWatch
from .plan import Plan, make_plan, run_sync
from .providers import get_provider
from .security import CertificateAuthority
from .state import ClusterRecord, StateDir, check_name
from .watchdog import HEARTBEAT_HANDLER

logger = logging.getLogger(__name__)

__all__ = ["RawCloudCluster"]

# The scheduler node is small: it schedules, it does not compute.


class SchedulerNode(ProcessInterface):
    """The scheduler, as SpecCluster sees it: one node, ready when it listens."""

    def __init__(self, launcher: NodeLauncher):
        self.launcher = launcher
        self.node: Node | None = None
        super().__init__()

    async def start(self) -> None:
        self.node = await self.launcher.start_scheduler(SCHEDULER_POOL)
        self.address = self.node.address
        await super().start()

    async def close(self) -> None:
        if self.node is not None:
            await self.launcher.terminate(self.node.id)
        await super().close()


class WorkerNode(ProcessInterface):
    """One worker node. Its dask worker is named after its spec key."""

    def __init__(
        self,
        scheduler: str,
        name: str,
        launcher: NodeLauncher,
        pool: WorkerPool,
        **kwargs: Any,  # nthreads and memory_limit, read by SpecCluster.scale(cores=, memory=)
    ):
        self.name = name
        self.launcher = launcher
        self.pool = pool
        self.node: Node | None = None
        super().__init__(scheduler=scheduler, name=name)

    async def start(self) -> None:
        # Returns once the node is launched; the worker joins the scheduler when it boots.
        self.node = await self.launcher.launch_worker(self.pool, self.name)
        await super().start()

    async def close(self) -> None:
        if self.node is not None:
            await self.launcher.terminate(self.node.id)
        await super().close()


def _pools(
    pools: Sequence[WorkerPool] | None,
    cpu: Any,
    memory: Any,
    resources: dict[str, float] | None,
    s: Settings,
) -> list[WorkerPool]:
    if pools is None:
        return [
            WorkerPool(
                cpu=s.worker_cpu if cpu is None else cpu,
                memory=s.worker_memory if memory is None else memory,
                resources=dict(resources or {}),
            )
        ]
    if cpu is not None or memory is not None or resources is not None:
        raise InvalidRequest(
            "give pools=[WorkerPool(...)] or worker_cpu=/worker_memory=/worker_resources=, not both."
        )
    pools = list(pools)
    if not pools or not all(isinstance(p, WorkerPool) for p in pools):
        raise InvalidRequest(f"pools must be a non-empty list of WorkerPool, got {pools!r}.")
    names = [p.name for p in pools]
    if len(set(names)) != len(names):
        raise InvalidRequest(f"pool names must differ, got {names}.")
    return pools


def _adaptive_defaults() -> dict[str, Any]:
    return {
        arg: dask.config.get(f"rawcloud.adaptive.{key}")
        for arg, key in [
            ("interval", "interval"),
            ("target_duration", "target-duration"),
            ("boot_estimate", "boot-estimate"),
            ("unseen_share", "unseen-share"),
        ]
    }


def _recordable(options: dict[str, Any]) -> dict[str, Any]:
    """The provider options another process can rebuild the provider from (plain JSON values)."""
    plain = (str, int, float, bool, type(None), list, tuple, dict)
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in options.items() if isinstance(v, plain)}


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise InvalidRequest(f"{what} must be a whole number >= 0, got {value!r}.")
    return int(value)


def _price_plan(
    *,
    provider: str | None = None,
    worker_cpu: int | None = None,
    worker_memory: str | int | None = None,
    worker_resources: dict[str, float] | None = None,
    pools: Sequence[WorkerPool] | None = None,
    live: bool | None = None,
    **provider_options: Any,
) -> Plan:
    """What these arguments would run on and cost per hour; nothing is created.

    Takes the constructor's arguments. Offers come from the bundled price
    catalog; with credentials (or ``live=True``) the cloud's current
    offerings are checked first, by read-only calls.

    >>> RawCloudCluster.plan(provider="aws", pools=[WorkerPool(cpu=4, memory="16GiB",
    ...                      market="spot_with_fallback", maximum=20)])  # doctest: +SKIP
    """
    s = settings()
    chosen = _pools(pools, worker_cpu, worker_memory, worker_resources, s)
    return run_sync(make_plan(chosen, provider or s.provider, live=live, **provider_options))


class _PlanAttribute:
    """``RawCloudCluster.plan(...)`` prices a request before anything exists;
    ``cluster.plan`` stays SpecCluster's set of planned worker names.

    distributed's ``Adaptive`` reads ``cluster.plan`` as that set on every
    tick, so a plain static method of the same name breaks the stock policy.
    Read from the class, the name is the pricing function; read from a
    cluster, it is SpecCluster's property.
    """

    def __get__(self, cluster: Any, owner: type | None = None) -> Any:
        if cluster is None:
            return _price_plan
        return SpecCluster.plan.fget(cluster)


class RawCloudCluster(SpecCluster):
    """An elastic Dask cluster on raw machines.

    Parameters
    ----------
    n_workers : int
        Workers to start with (default 0; use ``scale`` or ``adapt``).
    name : str, optional
        The cluster's name and id: ``dask-rawcloud ls`` shows it and
        ``dask-rawcloud down NAME`` removes it. Default: a fresh random name.
    provider : str, optional
        ``"local"`` (default, ``rawcloud.provider``).
    worker_cpu, worker_memory, worker_resources
        What each worker needs: threads, memory such as ``"4GiB"``, and Dask
        resources such as ``{"GPU": 1}``. The single-pool form of ``pools``.
    pools : list of WorkerPool, optional
        Several pools, each with its own size, resources, minimum and maximum.
        Tasks that ask for a resource run on the pool that provides it; the
        others on the first pool without special resources.
    tls : bool, optional
        Mutual TLS from a per-cluster CA (default on, ``rawcloud.tls``).
    idle_timeout, no_client_timeout, max_lifetime : str or float, optional
        Scheduler watchdogs (default ``rawcloud.scheduler.*``); ``"off"`` disables one.
    state_dir : path, optional
        Where the cluster is recorded (default ``rawcloud.state-dir``).
    **provider_options
        Passed to the provider.

    Examples
    --------
    >>> with RawCloudCluster(worker_cpu=2, worker_memory="4GiB") as cluster:
    ...     cluster.adapt(minimum=0, maximum=10)
    ...     client = cluster.get_client()
    """

    def __init__(
        self,
        n_workers: int = 0,
        *,
        name: str | None = None,
        provider: str | None = None,
        worker_cpu: int | None = None,
        worker_memory: str | int | None = None,
        worker_resources: dict[str, float] | None = None,
        pools: Sequence[WorkerPool] | None = None,
        tls: bool | None = None,
        idle_timeout: str | float | None = None,
        no_client_timeout: str | float | None = None,
        max_lifetime: str | float | None = None,
        state_dir: str | os.PathLike | None = None,
        asynchronous: bool = False,
        loop: Any = None,
        shutdown_on_close: bool = True,
        silence_logs: str | bool = False,
        **provider_options: Any,
    ):
        overrides = {
            f"rawcloud.scheduler.{key}": value
            for key, value in [
                ("idle-timeout", idle_timeout),
                ("no-client-timeout", no_client_timeout),
                ("max-lifetime", max_lifetime),
            ]
            if value is not None
        }
        if state_dir is not None:
            overrides["rawcloud.state-dir"] = str(state_dir)
        with dask.config.set(overrides):
            s = settings()

        # Every check comes before anything is started or recorded.
        n_workers = _count(n_workers, "n_workers")
        pools = _pools(pools, worker_cpu, worker_memory, worker_resources, s)
        self.pools: dict[str, WorkerPool] = {p.name: p for p in pools}
        self.pool = pools[0]  # scale(n) and n_workers act on the first pool
        provider_name = provider or s.provider
        embedded = {}
        if provider_name == "local":
            embedded = {"state_dir": s.state_dir, "terminate_grace_s": s.local_terminate_grace_s}
        self.provider = get_provider(provider_name, **embedded, **provider_options)
        for pool in pools:
            self.provider.check(pool)
        self.provider.check(SCHEDULER_POOL, role="scheduler")
        self.billing = {p.name: self.provider.billing(p) for p in pools}
        name = check_name(name or f"rawcloud-{secrets.token_hex(4)}")
        self._state = StateDir(s.state_dir)
        self._owns_state = False
        if name in self._state.names():
            raise ClusterExists(
                f"a cluster named {name!r} already exists. Pick another name, "
                f"or remove it first with `dask-rawcloud down {name}`."
            )

        use_tls = s.tls if tls is None else bool(tls)
        ca = CertificateAuthority.create(name) if use_tls else None
        self._state.save(
            ClusterRecord(
                name=name,
                provider=provider_name,
                created=time.time(),
                owner_pid=os.getpid(),
                provider_options=_recordable({**provider_options, **self.provider.options()}),
                tls=use_tls,
            )
        )
        self._owns_state = True
        if ca is not None:
            ca.save(self._state.cluster_dir(name) / "tls")

        self.launcher = NodeLauncher(
            self.provider,
            ClusterIdentity(
                cluster_id=name,
                ca=ca,
                host="127.0.0.1",
                death_timeout_s=s.worker_death_timeout_s,
                nanny=s.worker_nanny,
                idle_timeout_s=s.idle_timeout_s,
                no_client_timeout_s=s.no_client_timeout_s,
                max_lifetime_s=s.max_lifetime_s,
                dashboard=s.dashboard,
                boot_timeout_s=s.boot_timeout_s or self.provider.boot_timeout_s,
            ),
        )
        self._watch = NodeWatch(self, self.launcher.identity.boot_timeout_s, s.max_boot_failures)
        self._watch_interval_s = s.node_watch_interval_s
        self._node_checks: PeriodicCallback | None = None
        self._heartbeat_interval_s = min(10.0, max(0.25, (s.no_client_timeout_s or 40) / 4))
        self._heartbeat: PeriodicCallback | None = None
        self._pool_specs = {p.name: self._spec_for(p) for p in pools}
        worker = self._pool_specs[self.pool.name]
        self._worker_numbers = itertools.count()
        try:
            super().__init__(
                workers={f"{self.pool.name}-{next(self._worker_numbers)}": worker for _ in range(n_workers)},
                scheduler={"cls": SchedulerNode, "options": {"launcher": self.launcher}},
                worker=worker,
                security=ca.client_security() if ca else Security(),
                name=name,
                asynchronous=asynchronous,
                loop=loop,
                shutdown_on_close=shutdown_on_close,
                silence_logs=silence_logs,
            )
        except BaseException:
            if not asynchronous:
                self.close()
            raise

    plan = _PlanAttribute()

    @property
    def cluster_id(self) -> str:
        return self.name

    def _spec_for(self, pool: WorkerPool) -> dict[str, Any]:
        return {
            "cls": WorkerNode,
            "options": {
                "launcher": self.launcher,
                "pool": pool,
                "nthreads": pool.cpu,
                "memory_limit": pool.memory,
            },
        }

    def _new_name(self, pool: str) -> str:
        # Never reuse a name: a new node must not be mistaken for a retiring
        # one, and the scheduler refuses a second worker of the same name.
        return f"{pool}-{next(self._worker_numbers)}"

    def new_worker_spec(self) -> dict[str, dict]:
        return {self._new_name(self.pool.name): self.new_spec}

    def add_workers(self, pool: str, count: int) -> None:
        """Ask for ``count`` more workers of ``pool``; ``_correct_state`` launches them."""
        if self.status in (Status.closing, Status.closed):
            return
        if not self._watch.may_launch(pool):
            logger.warning("cluster %s: pool %s is held after repeated boot failures; "
                           "not launching %d node(s)", self.name, pool, count)
            return
        for _ in range(count):
            self.worker_spec[self._new_name(pool)] = self._pool_specs[pool]

    def scale(self, n: int = 0, memory: str | None = None, cores: int | None = None,
              pool: str | None = None):
        """Scale one pool (the first, by default) to ``n`` workers."""
        target = self._pool(pool)
        if memory is not None:
            n = max(n, math.ceil(parse_bytes(memory) / target.memory))
        if cores is not None:
            n = max(n, math.ceil(cores / target.cpu))
        n = _count(n, "n")
        mine = [k for k, v in self.worker_spec.items() if v["options"]["pool"].name == target.name]
        if len(mine) > n:
            connected = {w["name"] for w in self.scheduler_info.get("workers", {}).values()}
            # Drop workers that are still booting first, then the newest.
            mine.sort(key=lambda k: (k not in connected, int(k.rsplit("-", 1)[1])), reverse=True)
            for name in mine[: len(mine) - n]:
                del self.worker_spec[name]
        else:
            self.add_workers(target.name, n - len(mine))
        self.loop.add_callback(self._correct_state)
        if self.asynchronous:
            return NoOpAwaitable()

    def _pool(self, name: str | None) -> WorkerPool:
        if name is None:
            return self.pool
        if name not in self.pools:
            raise InvalidRequest(f"no pool named {name!r}; the pools are {sorted(self.pools)}.")
        return self.pools[name]

    async def retire(self, names: Sequence[str]) -> None:
        """Retire these workers gracefully (their data moves first), then end their nodes."""
        await self.scale_down([n for n in names if n in self.worker_spec])

    async def _correct_state_internal(self) -> None:
        # SpecCluster asks the scheduler to retire spec keys as if they were
        # addresses, which retires nothing; retire by name so data moves first.
        closing = sorted(set(self.workers) - set(self.worker_spec))
        if closing and self.scheduler_comm is not None and self.scheduler.status == Status.running:
            with suppress(OSError):
                await self.scheduler_comm.retire_workers(names=closing)
        try:
            await super()._correct_state_internal()
        except LaunchError as e:
            # Nodes the provider could not start (no capacity anywhere, a quota)
            # leave the spec, so nobody waits for them; the rest run on.
            logger.warning("cluster %s: %s", self.name, e)
        finally:
            for name in [n for n, w in self.workers.items() if getattr(w, "node", 1) is None]:
                self.workers.pop(name)
                self.worker_spec.pop(name, None)

    @property
    def boot_failures(self) -> list[BootError]:
        """Workers that never joined, each with its node's log, oldest first."""
        return list(self._watch.failures)

    def resume(self, pool: str) -> None:
        """Launch in ``pool`` again after repeated boot failures held it."""
        self._watch.resume(self._pool(pool).name)

    async def _check_nodes(self) -> None:
        if self.status != Status.running:
            return
        try:
            await self._watch.check()
        except Exception as e:  # the provider may be unreachable a moment; next time
            logger.warning("cluster %s: checking nodes failed: %s", self.name, e)

    def launched_at(self, name: str) -> float | None:
        worker = self.workers.get(name)
        node = getattr(worker, "node", None)
        return node.launched_at if node is not None else None

    def adapt(
        self,
        Adaptive: type | None = None,
        minimum: float | None = None,
        maximum: float | None = None,
        **kwargs: Any,
    ):
        """Scale each pool by the work waiting for it, from zero and back to zero.

        With one pool, ``minimum`` and ``maximum`` bound it; with several, set
        them on each ``WorkerPool``. Keyword arguments go to
        :class:`~dask_rawcloud.adaptive.RawCloudAdaptive` (``interval``,
        ``target_duration``, ``budget``, ...). ``Adaptive=distributed.deploy.Adaptive``
        selects distributed's stock policy instead.
        """
        low = 0 if minimum is None else minimum
        high = math.inf if maximum is None else maximum
        for what, value in (("minimum", low), ("maximum", high)):
            if not _is_number(value) or value < 0:
                raise InvalidRequest(f"adapt {what} must be a number >= 0, got {value!r}.")
        if low > high:
            raise InvalidRequest(
                f"adapt minimum ({low}) is larger than maximum ({high}); swap them."
            )
        if Adaptive is not None:
            return super().adapt(Adaptive=Adaptive, minimum=low, maximum=high, **kwargs)
        before = self.pool, self.pools
        if minimum is not None or maximum is not None:
            if len(self.pools) > 1:
                raise InvalidRequest(
                    "this cluster has several pools: set minimum= and maximum= on each "
                    "WorkerPool instead of in adapt()."
                )
            self.pool = dataclasses.replace(self.pool, minimum=int(low), maximum=high)
            self.pools = {self.pool.name: self.pool}
        defaults = {**_adaptive_defaults(), "max_lifetime": self.launcher.identity.max_lifetime_s}
        try:
            adaptive = RawCloudAdaptive(self, **{**defaults, **kwargs})  # checks its arguments
        except Exception:
            self.pool, self.pools = before  # a refused call changes nothing
            raise
        if self._adaptive is not None:
            self._adaptive.stop()
        self._adaptive = adaptive
        return adaptive

    @property
    def adaptive_log(self) -> list:
        """(time, decision) pairs of the pool-aware policy, newest last."""
        return list(getattr(self._adaptive, "log", ()))

    async def _start(self) -> None:
        try:
            await super()._start()
        except RuntimeError as e:
            # SpecCluster wraps start failures; ours already say what to fix.
            if isinstance(e.__cause__, RawCloudError):
                raise e.__cause__ from None
            raise
        record = self._state.load(self.name)
        record.scheduler_address = self.scheduler.address
        record.dashboard_link = self.dashboard_link or None
        self._state.save(record)
        self._heartbeat = PeriodicCallback(self._send_heartbeat, self._heartbeat_interval_s * 1000)
        self._heartbeat.start()
        self._node_checks = PeriodicCallback(self._check_nodes, self._watch_interval_s * 1000)
        self._node_checks.start()

    async def _send_heartbeat(self) -> None:
        # While this object lives it counts as a client, so the no-client
        # watchdog only fires once the process that owns it is gone.
        try:
            await getattr(self.scheduler_comm, HEARTBEAT_HANDLER)()
        except Exception as e:  # the scheduler may be closing; the next tick retries
            logger.debug("heartbeat failed: %s", e)

    async def _close(self) -> None:
        for periodic in (self._heartbeat, self._node_checks):
            if periodic is not None:
                periodic.stop()
        self.worker_spec.clear()  # every pool, not only the one scale(0) acts on
        if self.status in (Status.running, Status.failed) and not await self._scheduler_alive():
            # A watchdog (or `down`) already ended the scheduler: there is nobody
            # to retire workers gracefully, and asking would wait for a connect
            # timeout. Leftover nodes are terminated below all the same.
            self.scheduler.status = Status.closed
            self.shutdown_scheduler = False
        try:
            await super()._close()
        finally:
            await self._remove_everything()

    async def _scheduler_alive(self) -> bool:
        node = getattr(self.scheduler, "node", None)
        if node is None:
            return False
        return any(n.id == node.id and n.state is NodeState.running for n in await self.nodes())

    async def _watch_worker_status(self, comm) -> None:
        await super()._watch_worker_status(comm)
        if self.status == Status.running:
            logger.warning(
                "cluster %s: the scheduler connection ended; if a watchdog closed it, "
                "its reason is in the scheduler node's log", self.name
            )

    async def _remove_everything(self) -> None:
        """Terminate whatever the provider still lists for this cluster, then forget it."""
        if not self._owns_state:
            return
        self._owns_state = False
        try:
            nodes = await self.provider.list(self.name)
            if nodes:
                await self.provider.terminate([n.id for n in nodes])
            await self.provider.cleanup(self.name)
        except RawCloudError as e:
            # Keep the record: `down` (or `cleanup`) from any shell can finish the job.
            logger.error("cluster %s: could not remove its nodes (%s); run `dask-rawcloud down "
                         "%s` once the provider is reachable", self.name, e, self.name)
            return
        finally:
            await self.provider.close()
            await self.launcher.close()
        self._state.remove(self.name)

    async def nodes(self) -> list[Node]:
        """The cluster's nodes, as the provider lists them."""
        return await self.provider.list(self.name)
