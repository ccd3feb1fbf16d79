"""The provider interface: the only thing that touches machines.

A provider is mechanism. It starts the nodes it is told to start, stops the
ones it is told to stop, lists a cluster's nodes by the cluster's id, and
translates its own failures into the tree in ``errors.py``. It never decides
how many nodes to run or which ones.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable

from ..model import LaunchRequest, LaunchResult, Node, WorkerPool
from ..policy.placement import Offer
from ..policy.scaling import Billing

__all__ = ["Provider"]


class Provider(abc.ABC):
    """Start, stop and list the nodes of clusters.

    Every node is tagged with its cluster's id in the call that creates it,
    so ``list`` finds it even after the process that launched it died.
    """

    #: The name users pass as ``provider=``.
    name: str
    #: A node that has not joined its cluster this long after launch is terminated.
    boot_timeout_s: float = 60.0

    def check(self, pool: WorkerPool, role: str = "worker") -> None:
        """Raise ``InvalidRequest`` now if no node of this provider can hold ``pool``."""

    def options(self) -> dict:
        """What another process needs to construct this provider for the same cluster.

        Recorded with the cluster (JSON), so ``ls``, ``down`` and ``cleanup``
        from any shell reach the same regions and endpoint.
        """
        return {}

    def billing(self, pool: WorkerPool) -> Billing:
        """How a node of ``pool`` is billed."""
        return Billing()

    async def offers(self, pool: WorkerPool, role: str = "worker",
                     live: bool = False) -> list[Offer]:
        """What would run a node of ``pool``, cheapest first, without starting anything.

        ``live=True`` first checks what the cloud offers now (read-only calls).
        """
        return []

    def can_check_live(self) -> bool:
        """Whether ``offers(live=True)`` can reach the cloud (credentials are set up)."""
        return False

    @abc.abstractmethod
    async def launch(self, request: LaunchRequest) -> LaunchResult:
        """Start one node per name in ``request``; a repeated token launches nothing new.

        Nodes that could not be started are missing from the result, and its
        failures say why. Errors that leave nothing to launch (bad input,
        credentials) are raised.
        """

    @abc.abstractmethod
    async def terminate(self, node_ids: Iterable[str]) -> None:
        """Stop these nodes and everything running on them. Unknown ids are ignored."""

    @abc.abstractmethod
    async def list(self, cluster_id: str) -> list[Node]:
        """The cluster's nodes that are not yet terminated."""

    def boot_failed(self, node: Node) -> None:
        """``node`` launched but never joined: rank its offer last for a while."""

    async def logs(self, node_id: str) -> str:
        """The tail of a node's console or agent log, to explain a failure."""
        return ""

    async def cleanup(self, cluster_id: str) -> None:
        """Remove whatever else was created for the cluster, once its nodes are gone."""

    async def close(self) -> None:
        """Release clients and connections held by the provider."""
