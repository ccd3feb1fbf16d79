"""Nodes as process groups on this machine: the embedded default provider.

Each node runs the same agent a VM runs, in a new session, so terminating a
node kills the agent and everything it started. Nodes are recorded under the
state directory, keyed by cluster id, so another process can list them and
tear them down::

    <state-dir>/<cluster-id>/nodes/<node-id>.json     record (pid, start time)
    <state-dir>/<cluster-id>/nodes/<node-id>.log      the agent's output
    <state-dir>/<cluster-id>/nodes/<node-id>.ready    written by the agent
    <state-dir>/<cluster-id>/nodes/requests/<token>   node ids per launch request
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import pathlib
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import Any

import psutil
from dask.utils import format_bytes

from ..bootstrap import node_command, write_spec
from ..config import settings
from ..errors import LaunchError, NodeTooLarge
from ..model import LaunchRequest, LaunchResult, Node, NodeState, WorkerPool
from ..node import NODE_ENV
from ..policy.placement import Offer
from ..policy.scaling import Billing
from ..state import StateDir, read_json, write_json
from .base import Provider

__all__ = ["LocalProvider"]


def _alive(pid: int, create_time: float) -> bool:
    """The recorded process still runs (not a zombie, not a reused pid)."""
    try:
        p = psutil.Process(pid)
        return abs(p.create_time() - create_time) < 1 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _kill_groups(groups: dict[int, float]) -> None:
    """SIGKILL every process of these process groups started since the given time."""
    for p in psutil.process_iter(["create_time"]):
        try:
            started = groups.get(os.getpgid(p.pid))
            if started is not None and p.info["create_time"] >= started - 1:
                p.kill()
        except (ProcessLookupError, psutil.Error):
            pass


class LocalProvider(Provider):
    """Start nodes as local process groups.

    Parameters
    ----------
    state_dir : path, optional
        Where node records live (default: ``rawcloud.state-dir``).
    terminate_grace_s : float, optional
        Time between SIGTERM and SIGKILL (default: ``rawcloud.local.terminate-grace``).
    boot_delay_s : float, optional
        Delay before a worker node starts dask (default: ``rawcloud.local.boot-delay``).
    billing : Billing, optional
        How nodes are billed, for measurement (default: ``rawcloud.local.billing``).
    """

    name = "local"

    def __init__(
        self,
        state_dir: Any = None,
        terminate_grace_s: float | None = None,
        boot_delay_s: float | None = None,
        billing: Billing | None = None,
    ):
        s = settings()
        self.state = StateDir(pathlib.Path(state_dir) if state_dir else s.state_dir)
        self.boot_timeout_s = s.local_boot_timeout_s
        self.grace_s = s.local_terminate_grace_s if terminate_grace_s is None else terminate_grace_s
        self.boot_delay_s = s.local_boot_delay_s if boot_delay_s is None else boot_delay_s
        self._billing = billing or Billing(
            s.local_billing_minimum_s, s.local_billing_increment_s, s.local_price_per_hour
        )
        # Our own children, polled so that they are reaped and never linger as zombies.
        self._children: dict[str, subprocess.Popen] = {}

    # -- checks ---------------------------------------------------------------
    def check(self, pool: WorkerPool, role: str = "worker") -> None:
        cpus = os.cpu_count() or 1
        memory = psutil.virtual_memory().total
        if pool.cpu > cpus or pool.memory > memory:
            raise NodeTooLarge(
                f"a node of {pool.describe()} (pool {pool.name!r}) does not fit this machine, "
                f"which has {cpus} cpu and {format_bytes(memory)}. Ask for at most that "
                "(worker_cpu=, worker_memory=), or use a cloud provider."
            )

    def billing(self, pool: WorkerPool) -> Billing:
        return self._billing

    async def offers(self, pool: WorkerPool, role: str = "worker",
                     live: bool = False) -> list[Offer]:
        self.check(pool, role)
        return [Offer("process", "local", "", "on-demand", self._billing.price_per_hour)]

    # -- paths and records ----------------------------------------------------
    def _nodes_dir(self, cluster_id: str) -> pathlib.Path:
        return self.state.cluster_dir(cluster_id) / "nodes"

    def _records(self, cluster_id: str) -> list[dict]:
        out = []
        for path in sorted(self._nodes_dir(cluster_id).glob("*.json")):
            try:
                out.append(read_json(path))
            except (FileNotFoundError, ValueError):
                pass  # removed or being replaced right now
        return out

    def _find(self, node_id: str) -> pathlib.Path | None:
        found = list(self.state.root.glob(f"*/nodes/{node_id}.json"))
        return found[0] if found else None

    def _state(self, record: dict) -> tuple[NodeState, str | None]:
        child = self._children.get(record["id"])
        if child is not None and child.poll() is not None:
            self._children.pop(record["id"], None)
        if not _alive(record["pid"], record["create_time"]):
            return NodeState.terminated, None
        ready = pathlib.Path(record["ready_file"])
        try:
            return NodeState.running, read_json(ready)["address"]
        except (FileNotFoundError, ValueError, KeyError):
            return NodeState.pending, None

    def _node(self, record: dict, state: NodeState, address: str | None) -> Node:
        return Node(
            id=record["id"],
            cluster_id=record["cluster_id"],
            name=record["name"],
            role=record["role"],
            pool=record["pool"],
            state=state,
            address=address,
            launched_at=record["launched_at"],
        )

    # -- the interface --------------------------------------------------------
    async def launch(self, request: LaunchRequest) -> LaunchResult:
        self.check(request.pool)
        nodes_dir = self._nodes_dir(request.cluster_id)
        token_file = nodes_dir / "requests" / f"{request.token}.json"
        if token_file.exists():
            ids = set(read_json(token_file))
            return LaunchResult(tuple(
                self._node(r, *self._state(r))
                for r in self._records(request.cluster_id)
                if r["id"] in ids
            ))
        nodes = [self._start(nodes_dir, request, request.node_spec(n)) for n in request.names]
        write_json(token_file, [n.id for n in nodes])
        return LaunchResult(tuple(nodes))

    def _start(self, nodes_dir: pathlib.Path, request: LaunchRequest, spec) -> Node:
        node_id = f"local-{secrets.token_hex(6)}"
        ready_file = nodes_dir / f"{node_id}.ready"
        delay = self.boot_delay_s if spec.role == "worker" else 0.0
        spec = dataclasses.replace(spec, ready_file=str(ready_file), boot_delay_s=delay)
        spec_file = write_spec(nodes_dir / f"{node_id}.spec", spec)
        env = {**os.environ, NODE_ENV: f"{request.cluster_id}/{node_id}"}
        with open(nodes_dir / f"{node_id}.log", "ab") as log:
            try:
                proc = subprocess.Popen(
                    node_command(spec_file, sys.executable),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=env,
                )
            except OSError as e:
                raise LaunchError(f"could not start a local node: {e}") from e
        self._children[node_id] = proc
        record = {
            "id": node_id,
            "cluster_id": request.cluster_id,
            "name": spec.name,
            "role": request.role,
            "pool": request.pool.name,
            "pid": proc.pid,
            "create_time": psutil.Process(proc.pid).create_time(),
            "launched_at": time.time(),
            "ready_file": str(ready_file),
        }
        write_json(nodes_dir / f"{node_id}.json", record)
        return self._node(record, NodeState.pending, None)

    async def list(self, cluster_id: str) -> list[Node]:
        nodes = []
        for record in self._records(cluster_id):
            state, address = self._state(record)
            if state is not NodeState.terminated:
                nodes.append(self._node(record, state, address))
        return nodes

    async def terminate(self, node_ids: Iterable[str]) -> None:
        paths = [p for p in map(self._find, node_ids) if p is not None]
        records = []
        for path in paths:
            try:
                records.append(read_json(path))
            except (FileNotFoundError, ValueError):
                pass
        for r in records:
            if _alive(r["pid"], r["create_time"]):
                # The agent closes dask gracefully and ends its own group.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(r["pid"], signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline and any(
            self._state(r)[0] is not NodeState.terminated for r in records
        ):
            await asyncio.sleep(0.05)
        _kill_groups({r["pid"]: r["create_time"] for r in records})
        for r in records:
            self._reap(r["id"])
            base = pathlib.Path(r["ready_file"]).with_suffix("")
            for suffix in (".json", ".ready", ".spec"):
                base.with_suffix(suffix).unlink(missing_ok=True)

    def _reap(self, node_id: str) -> None:
        child = self._children.pop(node_id, None)
        if child is not None:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    async def logs(self, node_id: str, lines: int = 40) -> str:
        for log in self.state.root.glob(f"*/nodes/{node_id}.log"):
            text = log.read_text(errors="replace").splitlines()
            return "\n".join(text[-lines:])
        return ""

    async def close(self) -> None:
        for node_id in list(self._children):
            child = self._children[node_id]
            if child.poll() is not None:
                del self._children[node_id]



def node_processes(cluster_id: str | None = None) -> list[psutil.Process]:
    """Live processes started by a node agent (of one cluster, or of any).

    Found by the environment variable every node and its children inherit,
    so a leaked dask worker is found whatever its command line says.
    """
    found = []
    for p in psutil.process_iter():
        try:
            tag = p.environ().get(NODE_ENV)
            if tag and (cluster_id is None or tag.split("/")[0] == cluster_id):
                if p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
        except psutil.Error:
            pass
    return found
