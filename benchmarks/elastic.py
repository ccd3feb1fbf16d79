"""Bursty traces under RawCloudAdaptive and distributed's stock Adaptive, in one run.

Both policies drive the same RawCloudCluster on the same local provider, with
the same boot delay and the same billing model (per second, 60 s minimum,
both scaled by --time-scale so a run takes minutes, not hours).

    python benchmarks/elastic.py [--quick] [--json PATH] [--plot PATH]

Figures per trace and policy:
- connected / billed / busy worker-seconds; utilization = busy / connected,
  the measure the stock policy's 0.44 was taken with, and busy / billed (what
  is paid for, boot time and billing minimums included) as billed_utilization;
- makespan of each burst (submission to last result), time to first task;
- end of work to zero connected workers and to zero worker node processes,
  and how far past the paid time the last node ended.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import sys
import tempfile
import time
from dataclasses import dataclass, field

# Before dask is imported: dask.config reads DASK_* variables once, at import.
STATE = tempfile.mkdtemp(prefix="rawcloud-bench-")
os.environ["DASK_RAWCLOUD__STATE_DIR"] = STATE

import dask.config  # noqa: E402
# Nodes import the task functions from here, as users' workers import their modules.
HERE = str(pathlib.Path(__file__).parent)
sys.path.insert(0, HERE)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")]))

from distributed import Client, get_task_stream  # noqa: E402
from distributed.deploy import Adaptive  # noqa: E402

from dask_rawcloud import RawCloudCluster, WorkerPool  # noqa: E402
from dask_rawcloud.catalog import Catalog  # noqa: E402
from dask_rawcloud.cost import Meter, busy_worker_seconds  # noqa: E402
from dask_rawcloud.policy.scaling import Billing  # noqa: E402
from dask_rawcloud.providers.local import node_processes  # noqa: E402
from workloads import sleep_task  # noqa: E402


@dataclass(frozen=True)
class Burst:
    tasks: int
    task_s: float
    gpu_tasks: int = 0
    gap_after_s: float = 0.0


@dataclass(frozen=True)
class Trace:
    name: str
    bursts: tuple[Burst, ...]
    two_pool: bool = False


def traces(minimum_s: float, quick: bool) -> list[Trace]:
    n = 100 if quick else 200
    return [
        # The trace the stock policy was measured on: short tasks, a gap inside the billing minimum.
        Trace("short-bursts", (Burst(n, 0.05, gap_after_s=20 * minimum_s / 60), Burst(n, 0.05))),
        # Longer tasks, a gap longer than the billing minimum.
        Trace("long-tasks", (Burst(20 if quick else 40, 1.0, gap_after_s=1.5 * minimum_s),
                             Burst(20 if quick else 40, 1.0))),
        # Mostly CPU work, a few tasks that need a GPU.
        Trace("two-pool", (Burst(n // 2, 0.1, gpu_tasks=4),), two_pool=True),
    ]


@dataclass
class Recorder:
    """Samples workers, node processes and waiting tasks every 100 ms."""

    cluster: RawCloudCluster
    billing: Billing
    scheduler_tag: str
    meter: Meter = field(default_factory=Meter)
    node_seen: dict[str, list[float]] = field(default_factory=dict)  # tag -> [first, last]
    node_pool: dict[str, str] = field(default_factory=dict)  # tag -> pool
    series: list[tuple[float, int, int]] = field(default_factory=list)  # t, workers, waiting
    waiting: int = 0
    zero_workers_at: float | None = None
    zero_nodes_at: float | None = None

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.1)

    def sample(self) -> None:
        now = time.time()
        workers = len(self.cluster.scheduler_info.get("workers", {}))
        self.meter.sample(now, workers)
        tags = set()
        for p in node_processes(self.cluster.name):
            try:
                tags.add(p.environ()["DASK_RAWCLOUD_NODE"])
            except Exception:
                pass
        tags.discard(self.scheduler_tag)
        for w in self.cluster.workers.values():
            if getattr(w, "node", None) is not None:
                self.node_pool[f"{self.cluster.name}/{w.node.id}"] = w.pool.name
        for tag in tags:
            self.node_seen.setdefault(tag, [now, now])[1] = now
        self.series.append((now, workers, self.waiting))
        self.zero_workers_at = None if workers else (self.zero_workers_at or now)
        self.zero_nodes_at = None if tags else (self.zero_nodes_at or now)

    def billed_worker_s(self, pool: str | None = None) -> float:
        return sum(
            self.billing.billed_s(a, b)
            for tag, (a, b) in self.node_seen.items()
            if pool is None or self.node_pool.get(tag) == pool
        )

    def paid_until(self) -> float:
        return max((self.billing.paid_until(a, b) for a, b in self.node_seen.values()), default=0)


def hourly_prices() -> dict[str, float]:
    """What a node of each pool would cost on EC2: on-demand us-east-1, from the bundled catalog."""
    prices = Catalog.bundled().prices["us-east-1"]
    return {"cpu": prices["m6i.large"].on_demand, "gpu": prices["g5.xlarge"].on_demand}


async def run_trace(trace: Trace, policy: str, args, billing: Billing) -> dict:
    pools = (
        [WorkerPool("cpu", maximum=8), WorkerPool("gpu", resources={"GPU": 1}, maximum=2)]
        if trace.two_pool
        else [WorkerPool("cpu", maximum=8)]
    )
    if policy == "stock" and trace.two_pool:
        # Stock Adaptive scales one pool: every worker must then offer the GPU.
        pools = [WorkerPool("gpu", resources={"GPU": 1}, maximum=8)]
    async with RawCloudCluster(pools=pools, asynchronous=True, silence_logs="error") as cluster:
        if policy == "stock":
            cluster.adapt(Adaptive=Adaptive, minimum=0, maximum=8)
        else:
            cluster.adapt(boot_estimate=f"{args.boot_delay + 2}s")
        rec = Recorder(cluster, billing, f"{cluster.name}/{cluster.scheduler.node.id}")
        sampler = asyncio.ensure_future(rec.run())
        makespans, firsts = [], []
        async with Client(cluster, asynchronous=True) as client:
            async with get_task_stream(client) as stream:
                for i, burst in enumerate(trace.bursts):
                    start = time.time()
                    futures = client.map(sleep_task, range(burst.tasks), seconds=burst.task_s,
                                         key=f"b{i}", pure=False)
                    futures += client.map(sleep_task, range(burst.gpu_tasks), seconds=1.0,
                                          resources={"GPU": 1}, key=f"g{i}", pure=False)
                    rec.waiting = len(futures)
                    for f in asyncio.as_completed([_wait(f) for f in futures]):
                        await f
                        rec.waiting -= 1
                    makespans.append(time.time() - start)
                    firsts.append(start)
                    del futures
                    if burst.gap_after_s:
                        await asyncio.sleep(burst.gap_after_s)
                work_end = time.time()
                deadline = work_end + 3 * billing.minimum_s + 60
                while (rec.zero_nodes_at is None or rec.zero_workers_at is None) and time.time() < deadline:
                    await asyncio.sleep(0.1)
            data = stream.data
        sampler.cancel()
    starts = sorted(p["start"] for t in data for p in t["startstops"] if p["action"] == "compute")
    first_task_s = min(s - firsts[0] for s in starts[:1]) if starts else None
    busy = busy_worker_seconds(data)
    billed = rec.billed_worker_s()
    last_stop = max(p["stop"] for t in data for p in t["startstops"] if p["action"] == "compute")
    return {
        "utilization": round(busy / rec.meter.worker_s, 3) if rec.meter.worker_s else 0.0,
        "billed_utilization": round(busy / billed, 3) if billed else 0.0,
        "connected_worker_s": round(rec.meter.worker_s, 2),
        "billed_worker_s": round(billed, 2),
        "busy_worker_s": round(busy, 2),
        "gpu_billed_worker_s": round(rec.billed_worker_s("gpu"), 2),
        "billed_usd": round(sum(rec.billed_worker_s(pool) * price / 3600
                                for pool, price in hourly_prices().items()), 5),
        "makespan_s": [round(m, 2) for m in makespans],
        "first_task_s": round(first_task_s, 2) if first_task_s is not None else None,
        "end_to_zero_workers_s": _since(rec.zero_workers_at, last_stop),
        "end_to_zero_processes_s": _since(rec.zero_nodes_at, last_stop),
        "zero_processes_past_paid_s": _since(rec.zero_nodes_at, rec.paid_until()),
        "peak_workers": rec.meter.peak,
        "nodes_launched": len(rec.node_seen),
        "series": [(round(t - firsts[0], 2), w, q) for t, w, q in rec.series],
    }


#: A trace that takes longer than this is stuck (a policy that never launches), not slow.
TRACE_DEADLINE_S = 600


async def within(seconds: float, coro, what: str):
    try:
        return await asyncio.wait_for(coro, seconds)
    except asyncio.TimeoutError:
        raise SystemExit(f"{what} did not finish within {seconds:g}s: its policy is stuck") from None


async def _wait(future):
    return await future


def _since(t: float | None, origin: float) -> float | None:
    return None if t is None else round(t - origin, 2)


def plot(results: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(len(names), 2, figsize=(12, 3.2 * len(names)), squeeze=False, sharey="row")
    for row, trace in enumerate(names):
        for col, policy in enumerate(("rawcloud", "stock")):
            ax = axes[row][col]
            series = results[trace][policy]["series"]
            t = [s[0] for s in series]
            ax.step(t, [s[1] for s in series], where="post", label="workers connected", color="C0")
            ax2 = ax.twinx()
            ax2.plot(t, [s[2] for s in series], color="C1", alpha=0.6, label="tasks waiting")
            ax2.set_ylabel("tasks waiting", color="C1")
            m = results[trace][policy]
            ax.set_title(f"{trace} · {policy}: util {m['utilization']:.2f}, "
                         f"billed {m['billed_worker_s']:.0f} worker-s", fontsize=9)
            ax.set_xlabel("s since first submission")
            ax.set_ylabel("workers")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller traces")
    parser.add_argument("--json", type=pathlib.Path, help="write figures here")
    parser.add_argument("--plot", type=pathlib.Path, help="write a PNG here")
    parser.add_argument("--boot-delay", type=float, default=2.0, help="seconds a worker node waits before dask starts, as a VM boots")
    # Boots and bursts are not scaled, so too small a scale breaks the traces'
    # shape: at 0.2 (a 12 s minimum) the first short burst and its gap already
    # outlast the paid time, and the trace no longer has a gap inside it.
    parser.add_argument("--time-scale", type=float, default=0.5,
                        help="billing minimum = 60 s x this; the gaps scale with it")
    args = parser.parse_args()
    billing = Billing(minimum_s=60 * args.time_scale, increment_s=1.0)
    config = {
        "rawcloud.local.boot-delay": f"{args.boot_delay}s",
        "rawcloud.local.billing.minimum": f"{billing.minimum_s}s",
        "rawcloud.local.billing.increment": "1s",
        "rawcloud.worker.memory": "1GiB",
    }
    results: dict = {}
    with dask.config.set(config):
        for trace in traces(billing.minimum_s, args.quick):
            results[trace.name] = {}
            for policy in ("rawcloud", "stock"):
                m = asyncio.run(within(TRACE_DEADLINE_S, run_trace(trace, policy, args, billing),
                                       f"{trace.name} under {policy}"))
                results[trace.name][policy] = m
                print(f"{trace.name:13s} {policy:8s} util {m['utilization']:.2f} "
                      f"(of billed {m['billed_utilization']:.2f})  "
                      f"billed {m['billed_worker_s']:6.1f}  connected {m['connected_worker_s']:6.1f}  "
                      f"busy {m['busy_worker_s']:5.1f} worker-s  makespan {m['makespan_s']}  "
                      f"first task {m['first_task_s']}s  to zero: workers {m['end_to_zero_workers_s']}s, "
                      f"processes {m['end_to_zero_processes_s']}s ({m['zero_processes_past_paid_s']}s past paid)  "
                      f"peak {m['peak_workers']}, {m['nodes_launched']} nodes, "
                      f"GPU nodes billed {m['gpu_billed_worker_s']} worker-s", flush=True)
    for name, pair in results.items():
        r, s = pair["rawcloud"], pair["stock"]
        ratio = [round(a / b, 2) for a, b in zip(r["makespan_s"], s["makespan_s"])]
        print(f"{name:13s} rawcloud/stock: billed {r['billed_worker_s'] / s['billed_worker_s']:.2f} "
              f"(USD {r['billed_usd'] / s['billed_usd']:.2f}), "
              f"makespan {ratio}")
    if args.plot:
        plot(results, args.plot)
    if args.json:
        out = {"machine": {"cpus": os.cpu_count()}, "args": vars(args) | {"json": str(args.json), "plot": str(args.plot)},
               "traces": {t: {p: {k: v for k, v in m.items() if k != "series"} for p, m in pair.items()}
                          for t, pair in results.items()}}
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
