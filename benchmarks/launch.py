"""Launch N workers' instances through the EC2 provider against a local moto server.

    python benchmarks/launch.py [--workers 500] [--json PATH] [--baseline N]

A real moto server runs over HTTP on 127.0.0.1; the provider speaks to it with
the same aiobotocore code users run. It prints and writes the API calls by
operation (setup and catalog look-ups included), wall seconds to launch and to
terminate, and how those seconds split between waiting on EC2 (here: moto) and
our own work.

``--baseline N`` also launches N instances the way a per-node deployer does,
one RunInstances call each, in the same run, so the two can be compared as a
ratio on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import time

# moto reads these when it is imported: refuse a bad AMI or type, as AWS does.
os.environ.setdefault("MOTO_ENABLE_AMI_VALIDATION", "true")
os.environ.setdefault("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")
for key in [k for k in os.environ if k.startswith("AWS_")]:
    del os.environ[key]  # never a real account
os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                  AWS_EC2_METADATA_DISABLED="true")

import logging  # noqa: E402

import boto3  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

from dask_rawcloud.model import LaunchRequest, NodeSpec, WorkerPool  # noqa: E402
from dask_rawcloud.providers.aws import AWSProvider  # noqa: E402
from dask_rawcloud.security import CertificateAuthority  # noqa: E402

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
REGION = "us-east-1"
POOL = WorkerPool("default", cpu=2, memory="4GiB", market="spot")


def _request(cluster_id: str, n: int) -> LaunchRequest:
    ca = CertificateAuthority.create(cluster_id)
    pair = ca.issue("worker")
    spec = NodeSpec(cluster_id=cluster_id, role="worker", name=None,
                    scheduler_address="tls://10.0.0.1:8786",
                    tls_ca=ca.cert_pem, tls_cert=pair.cert, tls_key=pair.key)
    return LaunchRequest(cluster_id, "bench", "worker", POOL, spec,
                         tuple(f"default-{i}" for i in range(n)))


async def fleet(url: str, workers: int) -> dict:
    provider = AWSProvider(region=REGION, endpoint_url=url)
    cluster_id = "bench-fleet"
    try:
        started = time.perf_counter()
        result = await provider.launch(_request(cluster_id, workers))
        launch_s = time.perf_counter() - started
        assert len(result.nodes) == workers, result.failures
        launch_calls = dict(provider.ec2.calls)
        waited = sum(provider.ec2.seconds.values())
        create_fleet_s = provider.ec2.seconds["CreateFleet"]
        seconds = {op: round(t, 3) for op, t in provider.ec2.seconds.items()}

        provider.ec2.seconds.clear()
        started = time.perf_counter()
        await provider.terminate([n.id for n in result.nodes])
        terminate_s = time.perf_counter() - started
        terminate_calls = provider.ec2.calls["TerminateInstances"]
        await provider.cleanup(cluster_id)
        return {
            "workers": workers,
            "api_calls": sum(launch_calls.values()),
            "api_calls_by_operation": launch_calls,
            "launch_s": round(launch_s, 3),
            "launch_waiting_on_ec2_s": round(waited, 3),
            "launch_create_fleet_s": round(create_fleet_s, 3),
            "launch_seconds_by_operation": seconds,
            "terminate_s": round(terminate_s, 3),
            "terminate_api_calls": terminate_calls,
            "instance_types": sorted({n.instance_type for n in result.nodes}),
        }
    finally:
        await provider.close()


async def per_node(url: str, workers: int) -> dict:
    """One RunInstances per worker, all in flight at once: the per-node way."""
    provider = AWSProvider(region=REGION, endpoint_url=url)
    try:
        region = await provider._region(REGION)
        image = region.images["x86_64"].id
        subnet = next(iter(region.subnets.values()))
        started = time.perf_counter()
        answers = await asyncio.gather(*[
            provider.ec2.call(REGION, "RunInstances", ImageId=image, InstanceType="m6i.large",
                              MinCount=1, MaxCount=1, SubnetId=subnet)
            for _ in range(workers)])
        launch_s = time.perf_counter() - started
        ids = [i["InstanceId"] for a in answers for i in a["Instances"]]
        await provider.ec2.call(REGION, "TerminateInstances", InstanceIds=ids)
        return {"workers": workers, "api_calls": workers, "launch_s": round(launch_s, 3)}
    finally:
        await provider.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=500)
    parser.add_argument("--baseline", type=int, default=0, metavar="N",
                        help="also launch N instances with one RunInstances each")
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args()

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        # moto builds a region's backend (types, images, default VPC) on its first
        # request there, about a second that AWS never spends: pay it outside the timing.
        started = time.perf_counter()
        boto3.client("ec2", region_name=REGION, endpoint_url=url).describe_subnets()
        warmup_s = time.perf_counter() - started
        out = asyncio.run(fleet(url, args.workers))
        out["moto_warmup_s"] = round(warmup_s, 3)
        if args.baseline:
            out["baseline_run_instances"] = asyncio.run(per_node(url, args.baseline))
    finally:
        server.stop()

    print(f"{out['workers']} workers in {out['api_calls']} API calls:")
    for op, n in sorted(out["api_calls_by_operation"].items()):
        print(f"  {op:32} {n}  {out['launch_seconds_by_operation'][op]:6.3f} s")
    print(f"launch     {out['launch_s']:.2f} s wall ({out['launch_waiting_on_ec2_s']:.2f} s waiting "
          f"on EC2, of which CreateFleet {out['launch_create_fleet_s']:.2f} s)")
    print(f"(moto's one-time backend set-up in {REGION}, not timed above: {out['moto_warmup_s']:.2f} s)")
    print(f"terminate  {out['terminate_s']:.2f} s wall in {out['terminate_api_calls']} call(s)")
    if "baseline_run_instances" in out:
        b = out["baseline_run_instances"]
        print(f"baseline   {b['workers']} x RunInstances: {b['api_calls']} calls, {b['launch_s']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
