"""List and remove clusters from any process: what `ls`, `down` and `cleanup` do.

``ls`` and ``down`` start from the clusters recorded in the state directory.
``cleanup`` starts from the cloud: whatever carries this tool's tag, recorded
here or not (the laptop that made it may be gone).
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

from .config import settings
from .model import Node
from .providers import Provider, get_provider
from .state import ClusterRecord, StateDir

__all__ = ["ClusterStatus", "find_tagged", "list_clusters", "remove_cluster", "remove_tagged"]


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


def _aws(regions: list[str], state: StateDir):
    """An AWS provider over ``regions``, or the configured region and every recorded one."""
    from .config import aws_settings
    from .providers.aws import AWSProvider

    if not regions:
        regions = [aws_settings().region]
        for name in state.names():
            record = state.load(name)
            if record.provider == "aws":
                regions += record.provider_options.get("regions", [])
    return AWSProvider(regions=list(dict.fromkeys(regions)))


async def find_tagged(regions: list[str], state: StateDir) -> tuple[list[str], dict[str, dict]]:
    """The regions looked in, and per cluster id what this tool tagged there and remains."""
    provider = _aws(regions, state)
    try:
        return list(provider.regions), await provider.tagged()
    finally:
        await provider.close()


async def remove_tagged(cluster_ids: list[str], regions: list[str], state: StateDir) -> dict[str, int]:
    """Terminate and delete everything tagged for these clusters; forget their records."""
    provider = _aws(regions, state)
    removed = {}
    try:
        for cluster_id in cluster_ids:
            removed[cluster_id] = await provider.remove(cluster_id)
            if cluster_id in state.names() and state.load(cluster_id).provider == "aws":
                state.remove(cluster_id)
    finally:
        await provider.close()
    return removed


def as_json(statuses: list[ClusterStatus]) -> list[dict]:
    return [s.to_dict() for s in statuses]


