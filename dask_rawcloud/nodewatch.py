"""Keeps a cluster's worker spec true to its machines: boot failures and lost nodes.

SpecCluster believes a worker it launched exists until told otherwise. A
cloud breaks that belief two ways, and this watch, run every few seconds,
catches both:

- **Boot failure.** A node that has not joined the scheduler within its boot
  timeout, or whose machine ended before it joined, is terminated and leaves
  the spec. Its console output goes into the error (``failures``). The
  provider is told, so placement cools the offer off; and after
  ``max_boot_failures`` in a row in one pool, with no boot succeeding in
  between, the pool launches nothing more: a broken image or bootstrap
  costs a few boots, not a retry storm.
- **Lost node.** A worker that had joined and whose machine is gone (a spot
  interruption, a crash) leaves the spec, so the adaptive policy sees the
  gap and fills it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import TYPE_CHECKING

from .errors import BootError
from .model import NodeState

if TYPE_CHECKING:
    from .cluster import RawCloudCluster

logger = logging.getLogger(__name__)


class NodeWatch:
    def __init__(self, cluster: RawCloudCluster, boot_timeout_s: float,
                 max_boot_failures: int = 3):
        self.cluster = cluster
        self.boot_timeout_s = boot_timeout_s
        self.max_boot_failures = max_boot_failures
        #: Boot failures with each node's log, oldest first.
        self.failures: list[BootError] = []
        #: Pools that stopped launching after repeated boot failures.
        self.held: dict[str, BootError] = {}
        self._joined: set[str] = set()
        self._failed_in_a_row: Counter[str] = Counter()

    def may_launch(self, pool: str) -> bool:
        return pool not in self.held

    async def check(self) -> None:
        cluster = self.cluster
        connected = {str(w.get("name")) for w in cluster.scheduler_info.get("workers", {}).values()}
        for name in connected - self._joined:
            if name in cluster.worker_spec:
                self._joined.add(name)
                self._failed_in_a_row[cluster.worker_spec[name]["options"]["pool"].name] = 0
        live = {n.id: n for n in await cluster.provider.list(cluster.name)
                if n.state is not NodeState.terminated}
        now = time.time()
        async with cluster._lock:  # SpecCluster's: no launch or close runs meanwhile
            for name, worker in list(cluster.workers.items()):
                await self._check_one(name, worker, connected, live, now)

    async def _check_one(self, name: str, worker, connected: set[str], live: dict,
                         now: float) -> None:
        node = getattr(worker, "node", None)
        if node is None or name in connected or name not in self.cluster.worker_spec:
            return  # connected, or closing: SpecCluster's business
        if name in self._joined:
            if node.id not in live:
                logger.warning("cluster %s: worker %s's node %s ended; it leaves the cluster",
                               self.cluster.name, name, node.id)
                self._forget(name)
            return
        gone = node.id not in live
        if gone or now - node.launched_at > self.boot_timeout_s:
            await self._boot_failed(name, worker.pool.name, node, gone)

    async def _boot_failed(self, name: str, pool: str, node, gone: bool) -> None:
        cluster = self.cluster
        log = await cluster.provider.logs(node.id)
        if not gone:
            await cluster.provider.terminate([node.id])
        cluster.provider.boot_failed(node)
        what = ("ended before it joined the scheduler" if gone else
                f"did not join the scheduler within {self.boot_timeout_s:g}s (rawcloud.boot-timeout)")
        error = BootError(f"worker {name} (node {node.id}, {node.instance_type or 'process'} "
                          f"{node.zone or ''}) {what}; it was terminated.", log)
        self.failures.append(error)
        self._forget(name)
        self._failed_in_a_row[pool] += 1
        logger.error("cluster %s: %s", cluster.name, error)
        if self._failed_in_a_row[pool] >= self.max_boot_failures and pool not in self.held:
            self.held[pool] = error
            logger.error("cluster %s: pool %s launches no more nodes: %d boots in a row failed. "
                         "Fix the image or bootstrap, then cluster.resume(%r).", cluster.name,
                         pool, self._failed_in_a_row[pool], pool)

    def resume(self, pool: str) -> None:
        self.held.pop(pool, None)
        self._failed_in_a_row[pool] = 0

    def _forget(self, name: str) -> None:
        cluster = self.cluster
        cluster.worker_spec.pop(name, None)
        worker = cluster.workers.pop(name, None)
        if worker is not None:
            worker.node = None  # its node is gone: closing it terminates nothing
        self._joined.discard(name)
