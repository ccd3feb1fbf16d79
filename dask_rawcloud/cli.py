"""dask-rawcloud: start, list, remove and try out clusters from a shell."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import signal
import sys
import time

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from .errors import RawCloudError
from .manage import as_json, list_clusters, remove_cluster, state_dir

console = Console()
err_console = Console(stderr=True)


class _Command(click.Group):
    """Turns our errors into one clear line and exit code 2, with no traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RawCloudError as e:
            err_console.print(f"[bold red]error:[/] {e}", highlight=False)
            sys.exit(2)


@click.group(cls=_Command)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    envvar="DASK_RAWCLOUD__STATE_DIR",
    help="Where clusters are recorded (rawcloud.state-dir).",
)
@click.pass_context
def main(ctx: click.Context, state_dir: pathlib.Path | None) -> None:
    """Elastic Dask clusters on raw machines."""
    if state_dir is not None:
        import dask.config

        dask.config.set({"rawcloud.state-dir": str(state_dir)})


def _parse_adapt(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        low, high = (int(part) for part in value.split(":"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not MIN:MAX, for example 0:10") from None
    if low < 0 or high < low:
        raise click.BadParameter(f"need 0 <= MIN <= MAX, got minimum {low} > maximum {high}"
                                 if high < low else f"MIN must be >= 0, got {low}")
    return low, high


@main.command()
@click.option("--name", help="Cluster name (default: a fresh random one).")
@click.option("--provider", help="local (default), aws or ssh.")
@click.option("--workers", type=int, default=None, help="Start this many workers.")
@click.option("--adapt", "adapt", metavar="MIN:MAX", help="Scale adaptively; stays in the foreground.")
@click.option("--worker-cpu", type=str, default=None, help="Threads per worker.")
@click.option("--worker-memory", type=str, default=None, help="Memory per worker, e.g. 4GiB.")
@click.option("--no-client-timeout", default=None, help="End the cluster after this long without a client.")
@click.option("--emulate", is_flag=True,
              help="Run the aws provider against an EC2 emulator on this machine; stays in the foreground.")
def up(name, provider, workers, adapt, worker_cpu, worker_memory, no_client_timeout, emulate) -> None:
    """Start a cluster and print how to reach it."""
    if workers is not None and adapt is not None:
        raise click.UsageError("use --workers N or --adapt MIN:MAX, not both")
    bounds = _parse_adapt(adapt)
    cpu = _number(worker_cpu, "--worker-cpu")
    if emulate:
        if provider not in (None, "aws"):
            raise click.UsageError(f"--emulate emulates EC2: use it with --provider aws, not {provider}")
        with _emulator() as endpoint:
            _up(name, "aws", workers, bounds, cpu, worker_memory, no_client_timeout,
                foreground=True, endpoint_url=endpoint)
        return
    _up(name, provider, workers, bounds, cpu, worker_memory, no_client_timeout,
        foreground=bounds is not None)


@contextlib.contextmanager
def _emulator():
    """An EC2 emulator with this process pointed at it; yields its endpoint."""
    import dask.config

    from .emulator import REHEARSAL, Emulator

    with Emulator() as emu, dask.config.set(REHEARSAL):
        os.environ.update(emu.env)
        err_console.print(f"EC2 emulator at {emu.endpoint_url} (moto on 127.0.0.1; nodes are "
                          "local processes on their own loopback addresses)", highlight=False)
        yield emu.endpoint_url


def _up(name, provider, workers, bounds, cpu, worker_memory, no_client_timeout, foreground,
        **options) -> None:
    from .cluster import RawCloudCluster

    cluster = RawCloudCluster(
        workers or 0,
        name=name,
        provider=provider,
        worker_cpu=cpu,
        worker_memory=worker_memory,
        no_client_timeout=no_client_timeout,
        shutdown_on_close=foreground,
        **options,
    )
    if not foreground:
        _describe(cluster)
        console.print(
            f"It ends itself after {cluster.launcher.identity.no_client_timeout_s or 0:g}s without a client; "
            f"`dask-rawcloud down {cluster.name}` ends it now."
        )
        sys.stdout.flush()
        os._exit(0)  # leave the nodes running; they are recorded and watched
    # From here on, Ctrl-C or a SIGTERM, whenever it comes, tears everything down.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        _describe(cluster)
        if bounds is not None:
            cluster.adapt(minimum=bounds[0], maximum=bounds[1])
        with Live(_nodes_table(cluster), console=console, refresh_per_second=4) as live:
            while cluster.status.name == "running":
                live.update(_nodes_table(cluster))
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        console.print("tearing down ...")
        cluster.close()
        console.print(f"cluster {cluster.name} removed")


def _describe(cluster) -> None:
    console.print(f"cluster    [bold]{cluster.name}[/]")
    console.print(f"scheduler  {cluster.scheduler_address}")
    console.print(f"dashboard  {cluster.dashboard_link or '(off)'}")
    console.print(f'connect    python -c \'from dask_rawcloud import connect; client = connect("{cluster.name}")\'')


def _number(value: str | None, flag: str):
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{flag} must be a whole number, got {value!r}") from None


def _nodes_table(cluster) -> Table:
    nodes = cluster.sync(cluster.nodes)
    connected = {w["name"] for w in cluster.scheduler_info.get("workers", {}).values()}
    table = Table(title=f"{cluster.name}: {len(connected)} workers connected")
    for column in ("node", "name", "role", "state", "connected"):
        table.add_column(column)
    for n in nodes:
        table.add_row(n.id, n.name, n.role, n.state.value, "yes" if n.name in connected else "")
    return table


@main.command(name="ls")
@click.option("--json", "as_json_", is_flag=True, help="Print JSON: a list of clusters.")
def ls(as_json_: bool) -> None:
    """List the clusters recorded on this machine."""
    statuses = asyncio.run(list_clusters(state_dir()))
    if as_json_:
        click.echo(json.dumps(as_json(statuses), indent=1))
        return
    if not statuses:
        console.print("no clusters")
        return
    table = Table()
    for column in ("name", "provider", "nodes", "scheduler", "age"):
        table.add_column(column)
    for s in statuses:
        age = time.time() - s.record.created
        table.add_row(
            s.record.name,
            s.record.provider,
            str(len(s.nodes)) if s.nodes else "0 (ended; `down` forgets it)",
            s.record.scheduler_address or "",
            f"{age:.0f}s",
        )
    console.print(table)


@main.command()
@click.argument("name", required=False)
@click.option("--all", "all_", is_flag=True, help="Remove every recorded cluster.")
def down(name: str | None, all_: bool) -> None:
    """Terminate a cluster's nodes and forget it."""
    if bool(name) == all_:
        raise click.UsageError("give a cluster NAME or --all")
    state = state_dir()
    names = state.names() if all_ else [name]
    for n in names:
        count = asyncio.run(remove_cluster(state, n))
        console.print(f"removed {n} ({count} node{'s' if count != 1 else ''} terminated)")


def _regions(values: tuple[str, ...]) -> list[str]:
    """``--region a --region b`` and ``--region a,b`` alike."""
    return [r.strip() for v in values for r in v.split(",") if r.strip()]


@main.command()
@click.option("--provider", default="aws", show_default=True, help="aws, or local for this machine.")
@click.option("--region", "regions", multiple=True, metavar="R",
              help="A region the pool may use (repeat, or a,b); default rawcloud.aws.region.")
@click.option("--cpu", type=int, default=None, help="Cores per worker (default 1).")
@click.option("--memory", default=None, metavar="SIZE", help="Memory per worker, e.g. 16GiB (default 2GiB).")
@click.option("--gpu", type=int, default=0, help="GPUs per worker.")
@click.option("--gpu-model", default=None, help="e.g. A10G, T4.")
@click.option("--arch", type=click.Choice(["x86_64", "arm64"]), default=None)
@click.option("--market", type=click.Choice(["spot", "on-demand", "spot_with_fallback"]),
              default="on-demand", show_default=True)
@click.option("--instance-type", "instance_types", multiple=True, help="Allow only these (repeat).")
@click.option("--minimum", type=int, default=0, show_default=True, help="Workers at minimum size.")
@click.option("--maximum", type=int, default=None, help="Workers at maximum size.")
@click.option("--live/--no-live", default=None,
              help="Check live offerings with the cloud (default: when credentials exist).")
@click.option("--json", "as_json_", is_flag=True, help="Print the plan as JSON.")
def plan(provider, regions, cpu, memory, gpu, gpu_model, arch, market, instance_types,
         minimum, maximum, live, as_json_) -> None:
    """Show what a pool would run on and cost per hour; create nothing."""
    import math

    from .model import WorkerPool
    from .plan import plan as make

    sizes = {k: v for k, v in {"cpu": cpu, "memory": memory}.items() if v is not None}
    pool = WorkerPool("default", **sizes, gpu=gpu, gpu_model=gpu_model, arch=arch, market=market,
                      regions=_regions(regions), instance_types=instance_types, minimum=minimum,
                      maximum=math.inf if maximum is None else maximum)
    options = {"regions": pool.regions} if provider == "aws" and pool.regions else {}
    result = make([pool], provider, live=live, **options)
    if as_json_:
        click.echo(json.dumps(result.to_json(), indent=1))
    else:
        console.print(result)


@main.command()
@click.option("--regions", "regions", multiple=True, metavar="R",
              help="Regions to sweep (repeat, or a,b); default rawcloud.aws.region and the "
                   "regions of recorded clusters.")
@click.option("--yes", is_flag=True, help="Remove without asking.")
@click.option("--json", "as_json_", is_flag=True, help="Print what was found as JSON.")
def cleanup(regions, yes, as_json_) -> None:
    """Find everything this tool tagged on AWS and remove it, even if its creator is gone."""
    from .manage import find_tagged, remove_tagged

    state = state_dir()
    searched, found = asyncio.run(find_tagged(_regions(regions), state))
    if as_json_ and not yes:
        click.echo(json.dumps({"regions": searched, "clusters": found}, indent=1))
        return
    if not found:
        console.print(f"nothing tagged by dask-rawcloud in {', '.join(searched)}")
        return
    table = Table(title=f"tagged by dask-rawcloud in {', '.join(searched)}")
    for column in ("cluster", "instances", "security groups", "launch templates", "recorded here"):
        table.add_column(column)
    recorded = set(state.names())
    for cluster_id, counts in sorted(found.items()):
        table.add_row(cluster_id, str(counts["instances"]), str(counts["security_groups"]),
                      str(counts["launch_templates"]), "yes" if cluster_id in recorded else "")
    console.print(table)
    if not yes:
        if not sys.stdin.isatty() or not click.confirm("terminate and delete all of it?"):
            console.print("nothing removed (--yes removes without asking)")
            return
    removed = asyncio.run(remove_tagged(sorted(found), list(searched), state))
    for cluster_id, count in removed.items():
        console.print(f"removed {cluster_id} ({count} instance{'s' if count != 1 else ''} terminated)")


@main.command()
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=pathlib.Path),
              help="Also write the figures as JSON here.")
@click.option("--maximum", default=4, show_default=True, help="adapt(0, MAXIMUM).")
@click.option("--emulate", is_flag=True,
              help="Rehearse on the aws provider against an EC2 emulator on this machine.")
def demo(json_path: pathlib.Path | None, maximum: int, emulate: bool) -> None:
    """Scale 0 -> N -> 0 twice on real work, check the results, print the figures."""
    from .demo import as_json as demo_json
    from .demo import run_demo, summary

    if emulate:
        with _emulator() as endpoint:
            result = asyncio.run(run_demo(maximum=maximum, console=console, cluster_options={
                "provider": "aws", "endpoint_url": endpoint}))
    else:
        result = asyncio.run(run_demo(maximum=maximum, console=console))
    click.echo(summary(result))
    if json_path:
        json_path.write_text(json.dumps(demo_json(result), indent=1))
    sys.exit(0 if result.ok else 1)


if __name__ == "__main__":
    main()
