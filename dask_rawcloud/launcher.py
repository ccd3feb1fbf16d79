"""From "start worker default-3" to provider calls.

SpecCluster starts and closes workers one object at a time. ``NodeLauncher``
renders each node's spec (with its own TLS pair) and coalesces the calls
made in one event-loop turn into one provider call per pool, so
``scale(200)`` is one launch request, not 200.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import BootError, LaunchError
from .model import LaunchRequest, Node, NodeSpec, NodeState, WorkerPool
from .providers.base import Provider
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
        self.scheduler_address: str | None = None
        self._launches: Coalescer[tuple[WorkerPool, str], Node] = Coalescer(self._launch_batch)
        self._terminations: Coalescer[str, None] = Coalescer(self._terminate_batch)
        #: Provider calls made, by kind: what a test checks to see batching work.
        self.calls: dict[str, int] = {"launch": 0, "terminate": 0}

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

    def worker_spec(self, pool: WorkerPool, name: str) -> NodeSpec:
        i = self.identity
        return NodeSpec(
            cluster_id=i.cluster_id,
            role="worker",
            name=name,
            host=i.host,
            scheduler_address=self.scheduler_address,
            pool=pool.name,
            nthreads=pool.cpu,
            memory_limit=pool.memory,
            resources=dict(pool.resources),
            death_timeout_s=i.death_timeout_s,
            nanny=i.nanny,
            **self._tls(name),
        )

    # -- the scheduler ----------------------------------------------------------
    async def start_scheduler(self, pool: WorkerPool) -> Node:
        """Launch the scheduler node and wait until it listens, or fail with its log."""
        request = LaunchRequest(
            cluster_id=self.identity.cluster_id,
            token=secrets.token_hex(8),
            role="scheduler",
            pool=pool,
            nodes=(self.scheduler_spec(),),
        )
        self.calls["launch"] += 1
        (node,) = await self.provider.launch(request)
        node = await self._wait_ready(node)
        self.scheduler_address = node.address
        return node

    async def _wait_ready(self, node: Node) -> Node:
        deadline = time.monotonic() + self.identity.boot_timeout_s
        while time.monotonic() < deadline:
            current = {n.id: n for n in await self.provider.list(node.cluster_id)}.get(node.id)
            if current is None or current.state is NodeState.terminated:
                raise BootError(
                    f"the scheduler node {node.id} exited before it was ready.",
                    await self.provider.logs(node.id),
                )
            if current.state is NodeState.running and current.address:
                return current
            await asyncio.sleep(0.05)
        log = await self.provider.logs(node.id)
        await self.provider.terminate([node.id])
        raise BootError(
            f"the scheduler node {node.id} was not ready within "
            f"{self.identity.boot_timeout_s:g}s (rawcloud.boot-timeout); it was terminated.",
            log,
        )

    # -- workers, batched ---------------------------------------------------------
    async def launch_worker(self, pool: WorkerPool, name: str) -> Node:
        return await self._launches.submit((pool, name))

    async def terminate(self, node_id: str) -> None:
        await self._terminations.submit(node_id)

    async def _launch_batch(self, items: list[tuple[WorkerPool, str]]) -> list[Node]:
        by_pool: dict[str, list[int]] = {}
        for index, (pool, _) in enumerate(items):
            by_pool.setdefault(pool.name, []).append(index)
        results: list[Node | None] = [None] * len(items)
        for indices in by_pool.values():
            pool = items[indices[0]][0]
            request = LaunchRequest(
                cluster_id=self.identity.cluster_id,
                token=secrets.token_hex(8),
                role="worker",
                pool=pool,
                nodes=tuple(self.worker_spec(pool, items[i][1]) for i in indices),
            )
            self.calls["launch"] += 1
            nodes = await self.provider.launch(request)
            if len(nodes) != len(indices):
                raise LaunchError(
                    f"asked for {len(indices)} nodes of pool {pool.name!r}, got {len(nodes)}"
                )
            for i, node in zip(indices, nodes):
                results[i] = node
        logger.info("launched %d worker node(s)", len(items))
        return results  # type: ignore[return-value]

    async def _terminate_batch(self, node_ids: list[str]) -> list[None]:
        self.calls["terminate"] += 1
        await self.provider.terminate(node_ids)
        return [None] * len(node_ids)
