"""`dask-rawcloud demo`: scale 0 -> N -> 0 twice on real work, and measure it."""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from contextlib import suppress
from dataclasses import asdict, dataclass

import dask.array as da
import numpy as np
from distributed import Client, get_task_stream
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .cluster import RawCloudCluster
from .cost import Meter, busy_worker_seconds, last_task_end
from .providers.local import node_processes

__all__ = ["DemoResult", "run_demo"]


def slow_square(block: np.ndarray, seconds: float) -> np.ndarray:
    """Square a block, taking ``seconds`` as a heavier real task would."""
    time.sleep(seconds)
    return block**2


@dataclass
class DemoResult:
    ok: bool
    connected_worker_s: float
    busy_worker_s: float
    end_to_zero_s: float
    peak_workers: int
    tasks: int
    wall_s: float


@dataclass
class NodeCounts:
    booting: int = 0
    running: int = 0
    retiring: int = 0


async def node_counts(cluster: RawCloudCluster) -> NodeCounts:
    """Booting: launched, not yet connected. Retiring: no longer wanted, still alive."""
    wanted = set(cluster.worker_spec)
    connected = {w["name"] for w in cluster.scheduler_info.get("workers", {}).values()}
    alive = {n.name for n in await cluster.nodes() if n.role == "worker"}
    return NodeCounts(
        booting=len((alive & wanted) - connected),
        running=len(connected & wanted),
        retiring=len((alive | connected) - wanted),
    )


async def _burst(client: Client, index: int, tasks: int, task_s: float, progress, bar) -> bool:
    n = tasks * 10_000
    x = da.arange(n, chunks=10_000, dtype="f8")
    y = x.map_blocks(slow_square, task_s, dtype="f8")
    futures = client.compute([y.blocks[i].sum() for i in range(tasks)])
    total = 0.0
    for done in asyncio.as_completed([asyncio.ensure_future(_result(f)) for f in futures]):
        total += await done
        progress.advance(bar)
    expected = (n - 1) * n * (2 * n - 1) / 6  # sum of squares 0..n-1
    return math.isclose(total, expected, rel_tol=1e-12)


async def _result(future):
    return await future


async def run_demo(
    *,
    bursts: int = 2,
    tasks: int = 48,
    task_s: float = 0.25,
    maximum: int = 4,
    console: Console | None = None,
    zero_timeout_s: float = 60,
    cluster_options: dict | None = None,
) -> DemoResult:
    console = console or Console()
    start = time.monotonic()
    name = f"demo-{secrets.token_hex(3)}"
    meter = Meter()
    counts = NodeCounts()
    ok = True
    async with RawCloudCluster(
        name=name, worker_cpu=1, worker_memory="1GiB", asynchronous=True, silence_logs="warning",
        **(cluster_options or {}),
    ) as cluster:
        cluster.adapt(minimum=0, maximum=maximum)
        console.print(f"cluster [bold]{name}[/] at {cluster.scheduler_address}  {cluster.dashboard_link}")
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("nodes: {task.fields[b]} booting · {task.fields[r]} running · {task.fields[x]} retiring"),
            TimeElapsedColumn(),
            console=console,
        )

        async def watch() -> None:
            nonlocal counts
            while True:
                meter.sample(time.time(), len(cluster.scheduler_info.get("workers", {})))
                counts = await node_counts(cluster)
                if progress.tasks:  # the newest burst's line also shows its scale-down
                    progress.update(
                        progress.tasks[-1].id, b=counts.booting, r=counts.running, x=counts.retiring
                    )
                await asyncio.sleep(0.1)

        async with Client(cluster, asynchronous=True) as client:
            watcher = asyncio.ensure_future(watch())
            try:
                with progress:
                    async with get_task_stream(client) as stream:
                        for i in range(bursts):
                            bar = progress.add_task(f"burst {i + 1}/{bursts}", total=tasks, b=0, r=0, x=0)
                            ok &= await _burst(client, i, tasks, task_s, progress, bar)
                            ok &= await _wait_for_zero(cluster, zero_timeout_s)
                            zero_at = time.time()
                    stream_data = stream.data
            finally:
                watcher.cancel()
                with suppress(asyncio.CancelledError):
                    await watcher
            meter.sample(time.time(), len(cluster.scheduler_info.get("workers", {})))
            nthreads = {a: w["nthreads"] for a, w in cluster.scheduler_info["workers"].items()}
    leftover = node_processes(name)
    ok &= not leftover
    end = last_task_end(stream_data) or zero_at
    return DemoResult(
        ok=bool(ok),
        connected_worker_s=round(meter.worker_s, 2),
        busy_worker_s=round(busy_worker_seconds(stream_data, nthreads), 2),
        end_to_zero_s=round(max(0.0, zero_at - end), 2),
        peak_workers=meter.peak,
        tasks=bursts * tasks,
        wall_s=round(time.monotonic() - start, 2),
    )


async def _wait_for_zero(cluster: RawCloudCluster, timeout_s: float) -> bool:
    """Wait until no worker node is left: adapt has scaled the pool to zero."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not [n for n in await cluster.nodes() if n.role == "worker"]:
            return True
        await asyncio.sleep(0.05)
    return False


def summary(result: DemoResult) -> str:
    share = result.busy_worker_s / result.connected_worker_s if result.connected_worker_s else 0
    verdict = "ok" if result.ok else "FAILED"
    return (
        f"demo {verdict}: {result.tasks} tasks on up to {result.peak_workers} workers · "
        f"{result.connected_worker_s:.1f} worker-s connected, {result.busy_worker_s:.1f} busy "
        f"({share:.0%}) · {result.end_to_zero_s:.2f} s from end of work to zero nodes"
    )


def as_json(result: DemoResult) -> dict:
    return asdict(result)
