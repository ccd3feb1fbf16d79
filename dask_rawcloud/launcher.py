"""From "start worker default-3" to provider calls.

SpecCluster starts and closes workers one object at a time. ``NodeLauncher``
coalesces the calls made in one event-loop turn into one provider call per
pool, so ``scale(200)`` is one launch request, not 200. A request's nodes
boot from one spec, with one TLS pair: that is what lets a cloud start them
all in one call. Each node then learns its worker name (its spec key) from
the scheduler, where the launcher registers them by node id.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from distributed.comm import connect
from distributed.core import rpc
from distributed.security import Security

from .errors import BootError, LaunchError
from .model import LaunchRequest, LaunchResult, Node, NodeSpec, NodeState, WorkerPool
from .providers.base import Provider
from .registry import REGISTER_HANDLER
from .security import CertificateAuthority

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """Collects the calls made during one event-loop turn and runs them as one batch.

    ``run_batch`` takes the items and returns one result per item, in order.
    """

    def __init__(self, run_batch: Callable[[list[T]], Awaitable[Sequence[R]]]):
        self._run_batch = run_batch
        self._pending: tuple[list[T], asyncio.Future] | None = None

    async def submit(self, item: T) -> R:
        if self._pending is None:
            self._pending = ([], asyncio.get_running_loop().create_future())
            asyncio.get_running_loop().call_soon(self._flush)
        items, future = self._pending
        index = len(items)
        items.append(item)
        results = await asyncio.shield(future)
        if isinstance(results[index], BaseException):  # this item alone failed
            raise results[index]
        return results[index]

    def _flush(self) -> None:
        assert self._pending is not None
        items, future = self._pending
        self._pending = None

        async def run() -> None:
            try:
                future.set_result(await self._run_batch(items))
            except BaseException as e:  # handed to every waiting caller
                future.set_exception(e)

        asyncio.ensure_future(run())


@dataclass(frozen=True)
class ClusterIdentity:
    """What every node of one cluster shares."""

    cluster_id: str
    ca: CertificateAuthority | None
    host: str
    death_timeout_s: float
    nanny: bool
    idle_timeout_s: float | None
    no_client_timeout_s: float | None
    max_lifetime_s: float | None
    dashboard: bool
    boot_timeout_s: float


class NodeLauncher:
    """Starts and stops one cluster's nodes through its provider."""

    def __init__(self, provider: Provider, identity: ClusterIdentity):
        self.provider = provider
        self.identity = identity
        self.scheduler_address: str | None = None  # as workers reach it
        self._security = identity.ca.client_security() if identity.ca else Security()
        self._scheduler: rpc | None = None
        self._launches: Coalescer[tuple[WorkerPool, str], Node] = Coalescer(self._launch_batch)
        self._terminations: Coalescer[str, None] = Coalescer(self._terminate_batch)
        #: Provider calls made, by kind: what a test checks to see batching work.
        self.calls: dict[str, int] = {"launch": 0, "terminate": 0}
        #: What failed while launching (capacity, quota, ...), oldest first.
        self.failures: list = []

    # -- specs ----------------------------------------------------------------
    def _tls(self, common_name: str) -> dict[str, Any]:
        ca = self.identity.ca
        if ca is None:
            return {}
        pair = ca.issue(common_name)
        return {"tls_ca": ca.cert_pem, "tls_cert": pair.cert, "tls_key": pair.key}

    def scheduler_spec(self) -> NodeSpec:
        i = self.identity
        return NodeSpec(
            cluster_id=i.cluster_id,
            role="scheduler",
            name="scheduler",
            host=i.host,
            dashboard_port=0 if i.dashboard else None,
            idle_timeout_s=i.idle_timeout_s,
            no_client_timeout_s=i.no_client_timeout_s,
            max_lifetime_s=i.max_lifetime_s,
            **self._tls("scheduler"),
        )

    def worker_spec(self, pool: WorkerPool) -> NodeSpec:
        """The spec every node of one launch request boots from."""
        i = self.identity
        return NodeSpec(
            cluster_id=i.cluster_id,
            role="worker",
            name=None,
            host=i.host,
            scheduler_address=self.scheduler_address,
            pool=pool.name,
            nthreads=pool.cpu,
            memory_limit=pool.memory,
            resources=dict(pool.resources),
            death_timeout_s=i.death_timeout_s,
            nanny=i.nanny,
            boot_timeout_s=i.boot_timeout_s,
            **self._tls(f"{pool.name} worker"),
        )

    # -- the scheduler ----------------------------------------------------------
    async def start_scheduler(self, pool: WorkerPool) -> Node:
        """Launch the scheduler node and wait until it listens, or fail with its log."""
        request = LaunchRequest(
            cluster_id=self.identity.cluster_id,
            token=secrets.token_hex(8),
            role="scheduler",
            pool=pool,
            spec=self.scheduler_spec(),
            names=("scheduler",),
        )
        self.calls["launch"] += 1
        result = await self.provider.launch(request)
        if not result.nodes:
            raise _first_error(result, "the scheduler node could not be launched")
        node = await self._wait_ready(result.nodes[0])
        self.scheduler_address = node.internal_address or node.address
        self._scheduler = rpc(
            node.address, connection_args=self._security.get_connection_args("client")
        )
        return node

    async def _wait_ready(self, node: Node) -> Node:
        """Until the node runs and its scheduler accepts a connection, or its boot timeout."""
        deadline = time.monotonic() + self.identity.boot_timeout_s
        pause = 0.05  # a process is up in a second; a VM in minutes, so ask less often
        while time.monotonic() < deadline:
            current = {n.id: n for n in await self.provider.list(node.cluster_id)}.get(node.id)
            if current is None or current.state is NodeState.terminated:
                raise BootError(
                    f"the scheduler node {node.id} exited before it was ready.",
                    await self.provider.logs(node.id),
                )
            if current.state is NodeState.running and current.address:
                if await self._accepts(current.address):
                    return current
            await asyncio.sleep(pause)
            pause = min(1.0, pause * 1.5)
        log = await self.provider.logs(node.id)
        await self.provider.terminate([node.id])
        raise BootError(
            f"the scheduler node {node.id} was not ready within "
            f"{self.identity.boot_timeout_s:g}s (rawcloud.boot-timeout); it was terminated.",
            log,
        )

    async def _accepts(self, address: str) -> bool:
        # A running machine is not a running scheduler: it may still be booting.
        try:
            comm = await connect(address, timeout=2, **self._security.get_connection_args("client"))
        except (OSError, asyncio.TimeoutError):
            return False
        await comm.close()
        return True

    # -- workers, batched ---------------------------------------------------------
    async def launch_worker(self, pool: WorkerPool, name: str) -> Node:
        return await self._launches.submit((pool, name))

    async def terminate(self, node_id: str) -> None:
        await self._terminations.submit(node_id)

    async def _launch_batch(self, items: list[tuple[WorkerPool, str]]) -> list[Node | Exception]:
        by_pool: dict[str, list[int]] = {}
        for index, (pool, _) in enumerate(items):
            by_pool.setdefault(pool.name, []).append(index)
        results: list[Node | Exception] = [LaunchError("not launched")] * len(items)
        for indices in by_pool.values():
            pool = items[indices[0]][0]
            request = LaunchRequest(
                cluster_id=self.identity.cluster_id,
                token=secrets.token_hex(8),
                role="worker",
                pool=pool,
                spec=self.worker_spec(pool),
                names=tuple(items[i][1] for i in indices),
            )
            self.calls["launch"] += 1
            result = await self.provider.launch(request)
            self.failures.extend(result.failures)
            by_name = {n.name: n for n in result.nodes}
            await self._register_names(result.nodes)
            missing = _first_error(result, f"nodes of pool {pool.name!r} were not launched")
            for i in indices:
                results[i] = by_name.get(items[i][1], missing)
            logger.info("launched %d of %d worker node(s) of pool %s",
                        len(result.nodes), len(indices), pool.name)
        return results

    async def _register_names(self, nodes: Sequence[Node]) -> None:
        """Tell the scheduler which worker name each node will ask for."""
        if self._scheduler is None or not nodes:
            return
        try:
            await getattr(self._scheduler, REGISTER_HANDLER)(names={n.id: n.name for n in nodes})
        except (OSError, asyncio.TimeoutError) as e:
            # Nodes that cannot learn their names end themselves at their boot timeout.
            logger.warning("could not register worker names with the scheduler: %s", e)

    async def close(self) -> None:
        if self._scheduler is not None:
            await self._scheduler.close_rpc()

    async def _terminate_batch(self, node_ids: list[str]) -> list[None]:
        self.calls["terminate"] += 1
        await self.provider.terminate(node_ids)
        return [None] * len(node_ids)


def _first_error(result: LaunchResult, what: str) -> Exception:
    """The failure that left nodes unlaunched, or a plain LaunchError."""
    for failure in result.failures:
        if failure.count:
            return failure.error
    if result.failures:
        return result.failures[-1].error
    return LaunchError(f"{what}; the provider gave no reason.")
