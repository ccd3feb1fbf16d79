"""How fast a cluster starts and ends, on the local provider and on emulated EC2.

    python benchmarks/startup.py [--workers 8] [--json PATH]

For each target it times, in one run on this machine:
- ``RawCloudCluster(...)`` until the scheduler accepts connections;
- ``scale(N)`` until N workers are connected;
- ``close()`` until no node is left (for EC2: no live instance in moto).

On emulated EC2 every API call is real (a moto server on 127.0.0.1) and
every node really boots from its user-data, so the figures include the
provider's calls, the scheduler's name registry and TLS, but not a VM's
boot or package install (minutes on AWS, and the same for any tool).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile
import time

os.environ["DASK_RAWCLOUD__STATE_DIR"] = tempfile.mkdtemp(prefix="rawcloud-bench-")
for key in [k for k in os.environ if k.startswith("AWS_")]:
    del os.environ[key]  # never a real account

import dask.config  # noqa: E402
from distributed import Client  # noqa: E402

from dask_rawcloud import RawCloudCluster  # noqa: E402
from dask_rawcloud.emulator import REHEARSAL, Emulator  # noqa: E402
from dask_rawcloud.providers.local import node_processes  # noqa: E402


def measure(workers: int, **options) -> dict:
    started = time.perf_counter()
    cluster = RawCloudCluster(worker_cpu=1, worker_memory="1GiB", **options)
    scheduler_s = time.perf_counter() - started
    name = cluster.name
    with Client(cluster) as client:
        started = time.perf_counter()
        cluster.scale(workers)
        client.wait_for_workers(workers, timeout=300)
        workers_s = time.perf_counter() - started
        assert client.submit(sum, [1, 2, 3]).result() == 6
    calls = dict(getattr(getattr(cluster.provider, "ec2", None), "calls", {}))
    started = time.perf_counter()
    cluster.close()
    deadline = time.monotonic() + 60
    while node_processes(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    close_s = time.perf_counter() - started
    return {"scheduler_ready_s": round(scheduler_s, 2), "workers_connected_s": round(workers_s, 2),
            "close_to_no_node_s": round(close_s, 2), "api_calls": sum(calls.values()),
            "api_calls_by_operation": calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args()
    out = {"workers": args.workers, "cpus": os.cpu_count(), "local": measure(args.workers)}
    with Emulator() as emu, dask.config.set({**REHEARSAL, **emu.config}):
        os.environ.update(emu.env)
        out["emulated_ec2"] = measure(args.workers, provider="aws", region="us-east-1")
        out["emulated_ec2"]["instances_booted"] = len(emu.instances)
    for target in ("local", "emulated_ec2"):
        m = out[target]
        print(f"{target:13} scheduler ready {m['scheduler_ready_s']:5.2f} s · {args.workers} workers "
              f"connected {m['workers_connected_s']:5.2f} s · close {m['close_to_no_node_s']:5.2f} s"
              + (f" · {m['api_calls']} EC2 calls" if m["api_calls"] else ""))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
