"""The node agent: ``python -m dask_rawcloud.node --spec FILE``.

Every provider boots every node with this one command, so a node on a
laptop starts exactly as a node on a VM does. The agent:

1. reads its ``NodeSpec`` (and deletes the file, which holds a private key);
   on a VM it learns its address from the instance metadata service, and a
   worker asks the scheduler for its name by instance id;
2. starts a dask Scheduler (with the watchdogs) or a Nanny and its Worker;
3. writes a ready file with its address once it listens, so nobody has to
   scrape logs;
4. when the dask process ends, for whatever reason, ends its node: it kills
   whatever is left in its process group, and on a VM powers the machine off.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import gzip
import json
import logging
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any

from .model import NodeSpec

logger = logging.getLogger("dask_rawcloud.node")

#: Set in every node's environment, inherited by everything it starts, so
#: leaked processes can be found whatever their command line.
NODE_ENV = "DASK_RAWCLOUD_NODE"
#: Set by the emulator: this "machine" is a process group, and powering it
#: off is exiting (the emulator then terminates the instance).
EMULATED_ENV = "DASK_RAWCLOUD_EMULATED_MACHINE"


def read_spec(path: pathlib.Path) -> NodeSpec:
    raw = path.read_bytes()
    path.unlink(missing_ok=True)  # the key now lives only in this process
    if raw[:2] == b"\x1f\x8b":  # gzip: how user-data carries it, to stay small
        raw = gzip.decompress(raw)
    return NodeSpec.from_dict(json.loads(raw))


async def on_the_machine(spec: NodeSpec) -> tuple[NodeSpec, Any]:
    """Fill in what only the machine knows: its address and, for a worker, its name.

    Also returns the metadata service, or None off a VM.
    """
    if spec.host is not None and spec.name is not None:
        return spec, None
    from .imds import Metadata

    metadata = Metadata()
    host = spec.host or await asyncio.to_thread(metadata.get, "local-ipv4")
    spec = dataclasses.replace(spec, host=host)
    if spec.name is None:
        node_id = await asyncio.to_thread(metadata.get, "instance-id")
        spec = dataclasses.replace(spec, name=await _name_from_scheduler(spec, node_id))
    return spec, metadata


async def spot_notice(metadata: Any, poll_s: float) -> float:
    """Wait for a spot interruption notice; return the seconds left before termination."""
    while True:
        notice = await asyncio.to_thread(metadata.get, "spot/instance-action")
        if notice:
            when = json.loads(notice).get("time", "")
            try:
                end = datetime.datetime.strptime(when, "%Y-%m-%dT%H:%M:%SZ").replace(
                    tzinfo=datetime.timezone.utc).timestamp()
            except ValueError:
                end = time.time() + 120.0  # AWS's notice is two minutes
            return max(0.0, end - time.time())
        await asyncio.sleep(poll_s)


async def leave_before(spec: NodeSpec, address: str, left_s: float) -> None:
    """Retire this worker gracefully: the scheduler moves its data to others first.

    The scheduler is told of the notice first, so the cluster launches a
    replacement while the data moves. Whatever happens, this returns before
    the deadline, leaving a margin for the node to end.
    """
    from distributed.core import rpc

    from .workload import NOTICE_HANDLER

    security, _ = _security(spec)
    budget = max(0.5, left_s - min(10.0, left_s / 4))
    logger.warning("worker %s: spot interruption in %.0fs; retiring", spec.name, left_s)
    try:
        async with rpc(spec.scheduler_address,
                       connection_args=security.get_connection_args("worker")) as scheduler:
            await asyncio.wait_for(getattr(scheduler, NOTICE_HANDLER)(
                name=spec.name, deadline=time.time() + left_s), timeout=min(5.0, budget))
            await asyncio.wait_for(scheduler.retire_workers(
                workers=[address], close_workers=False, remove=True), timeout=budget)
        logger.info("worker %s retired; its data moved", spec.name)
    except (OSError, asyncio.TimeoutError) as e:
        logger.warning("worker %s: retiring before the interruption failed: %s", spec.name, e)


async def _name_from_scheduler(spec: NodeSpec, node_id: str) -> str:
    """Ask the scheduler, until the client has registered this node's name."""
    from distributed.core import rpc

    from .registry import LOOKUP_HANDLER

    security, _ = _security(spec)
    deadline = time.monotonic() + spec.boot_timeout_s
    async with rpc(spec.scheduler_address,
                   connection_args=security.get_connection_args("worker")) as scheduler:
        while time.monotonic() < deadline:
            try:
                name = await getattr(scheduler, LOOKUP_HANDLER)(node_id=node_id)
            except (OSError, asyncio.TimeoutError) as e:
                logger.info("scheduler not reachable yet: %s", e)
                name = None
            if name:
                return name
            await asyncio.sleep(1.0)
    raise TimeoutError(
        f"node {node_id} got no worker name from {spec.scheduler_address} within "
        f"{spec.boot_timeout_s:g}s; ending it."
    )


def _security(spec: NodeSpec):
    from distributed.security import Security

    from .security import KeyPair, security_from

    if not spec.tls_ca:
        return Security(), "tcp"
    return security_from(spec.tls_ca, KeyPair(spec.tls_cert, spec.tls_key)), "tls"


async def start_scheduler(spec: NodeSpec):
    from distributed import Scheduler

    from .registry import NameRegistry
    from .watchdog import Watchdog
    from .workload import WorkloadPlugin

    security, protocol = _security(spec)
    dashboard = spec.dashboard_port is not None
    scheduler = Scheduler(
        host=spec.host,
        port=spec.port,
        protocol=protocol,
        security=security,
        dashboard=dashboard,
        dashboard_address=f"{spec.host}:{spec.dashboard_port or 0}" if dashboard else None,
        idle_timeout=spec.idle_timeout_s,
    )
    scheduler.add_plugin(Watchdog(spec.no_client_timeout_s, spec.max_lifetime_s))
    scheduler.add_plugin(WorkloadPlugin())
    scheduler.add_plugin(NameRegistry())
    await scheduler
    return scheduler, {"address": scheduler.address, "dashboard_link": _dashboard(scheduler)}


def _dashboard(scheduler) -> str | None:
    if "dashboard" not in scheduler.services:
        return None
    return f"http://{scheduler.ip}:{scheduler.services['dashboard'].port}/status"


async def start_worker(spec: NodeSpec):
    from distributed import Nanny, Worker

    security, protocol = _security(spec)
    # With a Nanny the worker runs in a child process the Nanny restarts if it
    # dies; without, it runs here, which halves the processes (and memory) per node.
    server = (Nanny if spec.nanny else Worker)(
        spec.scheduler_address,
        name=spec.name,
        nthreads=spec.nthreads,
        memory_limit=spec.memory_limit or "auto",
        resources=spec.resources or None,
        security=security,
        host=spec.host,
        protocol=protocol,
        death_timeout=spec.death_timeout_s,
        dashboard=False,
    )
    await server
    address = server.worker_address if spec.nanny else server.address
    return server, {"address": address}


async def run(spec: NodeSpec) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    if spec.boot_delay_s:
        await asyncio.sleep(spec.boot_delay_s)
    spec, metadata = await on_the_machine(spec)
    start = start_scheduler if spec.role == "scheduler" else start_worker
    server, ready = await start(spec)
    if spec.ready_file:
        from .state import write_json

        write_json(pathlib.Path(spec.ready_file), {"pid": os.getpid(), **ready})
    logger.info("%s %s ready at %s", spec.role, spec.name, ready["address"])

    finished = asyncio.ensure_future(server.finished())
    stopped = asyncio.ensure_future(stop.wait())
    waits = [finished, stopped]
    notice = None
    if spec.role == "worker" and metadata is not None and await asyncio.to_thread(
            metadata.get, "instance-life-cycle") == "spot":
        notice = asyncio.ensure_future(spot_notice(metadata, spec.spot_poll_s))
        waits.append(notice)
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    if notice is not None and notice.done():
        await leave_before(spec, ready["address"], notice.result())
        await server.close()
    elif stopped.done():
        logger.info("%s %s: stop requested, closing", spec.role, spec.name)
        await server.close()
    for w in waits:
        w.cancel()
    logger.info("%s %s ended", spec.role, spec.name)
    return 0


def end_node(spec: NodeSpec) -> None:
    """Leave nothing behind: kill the rest of the process group, power off a VM."""
    import psutil

    me = os.getpid()
    group = os.getpgrp()
    for p in psutil.process_iter():
        try:
            if p.pid != me and os.getpgid(p.pid) == group:
                p.kill()
        except (ProcessLookupError, psutil.Error):
            pass
    if spec.on_exit == "poweroff" and not os.environ.get(EMULATED_ENV):
        logger.info("powering off")
        subprocess.run(["shutdown", "-h", "now"], check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dask_rawcloud.node")
    parser.add_argument("--spec", required=True, type=pathlib.Path)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    spec = read_spec(args.spec)
    rc = 1
    try:
        rc = asyncio.run(run(spec))
    except Exception:
        logger.exception("%s %s failed", spec.role, spec.name)
    finally:
        logging.shutdown()
        end_node(spec)
    return rc


if __name__ == "__main__":
    sys.exit(main())
