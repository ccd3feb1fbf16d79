"""List and remove recorded clusters from any process: what `ls` and `down` do."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

from .config import settings
from .model import Node
from .providers import Provider, get_provider
from .state import ClusterRecord, StateDir

__all__ = ["ClusterStatus", "list_clusters", "remove_cluster"]


@dataclass(frozen=True)
class ClusterStatus:
    record: ClusterRecord
    nodes: list[Node]

    def to_dict(self) -> dict:
        return {
            "name": self.record.name,
            "provider": self.record.provider,
            "scheduler_address": self.record.scheduler_address,
            "dashboard_link": self.record.dashboard_link,
            "created": self.record.created,
            "nodes": [
                {"id": n.id, "name": n.name, "role": n.role, "pool": n.pool, "state": n.state.value}
                for n in self.nodes
            ],
        }


def state_dir(root: pathlib.Path | None = None) -> StateDir:
    return StateDir(root or settings().state_dir)


def provider_for(record: ClusterRecord, state: StateDir) -> Provider:
    options = dict(record.provider_options)
    if record.provider == "local":
        options["state_dir"] = state.root
    return get_provider(record.provider, **options)


async def list_clusters(state: StateDir) -> list[ClusterStatus]:
    out = []
    for name in state.names():
        record = state.load(name)
        provider = provider_for(record, state)
        try:
            out.append(ClusterStatus(record, await provider.list(name)))
        finally:
            await provider.close()
    return out


async def remove_cluster(state: StateDir, name: str) -> int:
    """Terminate every node of ``name``, remove what was created for it, forget it.

    Returns the number of nodes terminated. Raises ClusterNotFound.
    """
    record = state.load(name)
    provider = provider_for(record, state)
    try:
        nodes = await provider.list(name)
        if nodes:
            await provider.terminate([n.id for n in nodes])
        await provider.cleanup(name)
    finally:
        await provider.close()
    state.remove(name)
    return len(nodes)


def as_json(statuses: list[ClusterStatus]) -> list[dict]:
    return [s.to_dict() for s in statuses]


