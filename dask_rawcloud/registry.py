"""Scheduler plugin: which worker name each node is to take.

A cloud starts a whole launch request from one user-data, so a node cannot be
told its name at launch. The client registers ``{node id: name}`` here once the
launch call returns, and each worker asks for its name by its own node id
before its dask worker starts. That keeps worker names equal to the
SpecCluster spec keys, so adaptive scale-down retires the workers the
scheduler reports idle.
"""

from __future__ import annotations

from distributed.diagnostics.plugin import SchedulerPlugin

REGISTER_HANDLER = "rawcloud_register_names"
LOOKUP_HANDLER = "rawcloud_worker_name"


class NameRegistry(SchedulerPlugin):
    name = "rawcloud-names"

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    async def start(self, scheduler) -> None:
        scheduler.handlers[REGISTER_HANDLER] = self.register
        scheduler.handlers[LOOKUP_HANDLER] = self.lookup

    def register(self, names: dict[str, str]) -> None:
        self.names.update(names)

    def lookup(self, node_id: str) -> str | None:
        return self.names.get(node_id)
