"""Plain, frozen values shared by the cluster, the policy and the providers."""

from __future__ import annotations

import dataclasses
import enum
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Literal

from dask.utils import format_bytes, parse_bytes

from .errors import InvalidRequest, RawCloudError

__all__ = [
    "LaunchFailure",
    "LaunchRequest",
    "LaunchResult",
    "Node",
    "NodeSpec",
    "NodeState",
    "SCHEDULER_POOL",
    "Role",
    "WorkerPool",
]

Role = Literal["scheduler", "worker"]
MARKETS = ("on-demand", "spot", "spot_with_fallback")


def positive_int(value: Any, what: str, fix: str) -> int:
    """``value`` as a whole number >= 1, or an InvalidRequest naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidRequest(f"{what} must be a whole number >= 1, got {value!r}. {fix}")
    if value < 1 or value != int(value):
        raise InvalidRequest(f"{what} must be a whole number >= 1, got {value!r}. {fix}")
    return int(value)


def memory_bytes(value: Any, what: str, fix: str) -> int:
    """``value`` ("4GiB", "512 MB" or a byte count) as bytes > 0."""
    if isinstance(value, bool):
        raise InvalidRequest(f"{what} must be a size such as '4GiB', got {value!r}. {fix}")
    try:
        n = parse_bytes(value) if isinstance(value, str) else value
    except (ValueError, TypeError):
        n = None
    if not isinstance(n, numbers.Real) or not math.isfinite(n) or n <= 0:
        raise InvalidRequest(f"{what} must be a size such as '4GiB', got {value!r}. {fix}")
    return int(n)


@dataclass(frozen=True)
class WorkerPool:
    """A group of identical workers, described by what they need, not by a machine type.

    Parameters
    ----------
    name : str
        The pool's name; its workers are named ``{name}-{n}``.
    cpu : int
        Threads (and cores) per worker.
    memory : str or int
        Memory per worker, such as ``"4GiB"``.
    resources : dict
        Dask resources each worker advertises, such as ``{"GPU": 1}``.
    minimum, maximum : int
        Bounds on the number of workers for adaptive scaling.
    gpu, gpu_model, arch : optional
        GPUs per worker (which also advertises the Dask resource ``GPU``), a
        GPU model such as ``"A10G"``, and ``"x86_64"`` or ``"arm64"``.
    market : str
        ``"on-demand"``, ``"spot"`` or ``"spot_with_fallback"`` (cloud providers).
    regions, instance_types : tuple of str
        Where workers may run, and an optional allow-list of instance types.
    max_types : int
        At most this many instance types are offered to the cloud per launch.
    """

    name: str = "default"
    cpu: int = 1
    memory: int = field(default=parse_bytes("2GiB"))
    resources: dict[str, float] = field(default_factory=dict)
    minimum: int = 0
    maximum: float = math.inf
    gpu: int = 0
    gpu_model: str | None = None
    arch: str | None = None
    market: str = "on-demand"
    regions: tuple[str, ...] = ()
    instance_types: tuple[str, ...] = ()
    max_types: int = 8

    def __post_init__(self) -> None:
        fix = f"Fix the {self.name!r} worker pool."
        object.__setattr__(self, "cpu", positive_int(self.cpu, "worker cpu", fix))
        object.__setattr__(self, "memory", memory_bytes(self.memory, "worker memory", fix))
        if not isinstance(self.name, str) or not self.name.replace("-", "").isalnum():
            raise InvalidRequest(
                f"pool name must be letters, digits and '-', got {self.name!r}."
            )
        for key, amount in self.resources.items():
            if not isinstance(amount, numbers.Real) or amount <= 0:
                raise InvalidRequest(
                    f"resource {key!r} must be a positive number, got {amount!r}. {fix}"
                )
        if isinstance(self.gpu, bool) or not isinstance(self.gpu, int) or self.gpu < 0:
            raise InvalidRequest(f"gpu must be a whole number >= 0, got {self.gpu!r}. {fix}")
        if self.gpu and "GPU" not in self.resources:
            object.__setattr__(self, "resources", {**self.resources, "GPU": self.gpu})
        if self.market not in MARKETS:
            raise InvalidRequest(
                f"market must be one of {', '.join(MARKETS)}, got {self.market!r}. {fix}"
            )
        if self.arch not in (None, "x86_64", "arm64"):
            raise InvalidRequest(f"arch must be 'x86_64' or 'arm64', got {self.arch!r}. {fix}")
        object.__setattr__(self, "regions", tuple(self.regions))
        object.__setattr__(self, "instance_types", tuple(self.instance_types))
        positive_int(self.max_types, "max_types", fix)
        if not isinstance(self.minimum, numbers.Real) or self.minimum < 0:
            raise InvalidRequest(f"minimum must be >= 0, got {self.minimum!r}. {fix}")
        if not isinstance(self.maximum, numbers.Real) or self.maximum < self.minimum:
            raise InvalidRequest(
                f"minimum ({self.minimum}) is larger than maximum ({self.maximum}). {fix}"
            )

    def describe(self) -> str:
        gpu = f", {self.gpu} GPU{' ' + self.gpu_model if self.gpu_model else ''}" if self.gpu else ""
        return f"{self.cpu} cpu, {format_bytes(self.memory)}{gpu}"


@dataclass(frozen=True)
class NodeSpec:
    """Everything the node agent needs to boot one node, and nothing else.

    It is rendered into a file (local) or user-data (VM) by ``bootstrap``.
    It holds the node's private key, so it is never logged.
    """

    cluster_id: str
    role: Role
    # None: the node asks the scheduler for its name by instance id, since one
    # cloud call starts many nodes from one spec.
    name: str | None
    # None: listen on the address the instance metadata service reports.
    host: str | None = "127.0.0.1"
    scheduler_address: str | None = None  # workers only
    port: int = 0
    dashboard_port: int | None = None  # scheduler only; None disables it
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = field(default=None, repr=False)
    pool: str = "default"
    nthreads: int = 1
    memory_limit: int = 0
    resources: dict[str, float] = field(default_factory=dict)
    death_timeout_s: float = 60.0
    nanny: bool = True  # False: the worker runs in the agent's own process, one process per node
    idle_timeout_s: float | None = None
    no_client_timeout_s: float | None = None
    max_lifetime_s: float | None = None
    ready_file: str | None = None
    boot_delay_s: float = 0.0  # rehearse a VM's boot time before dask starts
    boot_timeout_s: float = 600.0  # a worker that cannot learn its name by then ends its node
    on_exit: Literal["exit", "poweroff"] = "exit"
    # A worker on a spot instance polls its metadata for an interruption notice this often.
    spot_poll_s: float = 5.0

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NodeSpec:
        return cls(**d)


class NodeState(str, enum.Enum):
    pending = "pending"
    running = "running"
    terminated = "terminated"


@dataclass(frozen=True)
class Node:
    """One machine (or process group) the provider started for a cluster."""

    id: str
    cluster_id: str
    name: str
    role: Role
    pool: str
    state: NodeState
    address: str | None = None  # the scheduler's contact address, once it is ready
    launched_at: float = 0.0
    internal_address: str | None = None  # how other nodes reach it, if not ``address``
    region: str = ""
    zone: str = ""
    instance_type: str = ""
    market: str = ""


@dataclass(frozen=True)
class LaunchRequest:
    """Start one node per name, all from one spec.

    One spec for the whole request is what lets a cloud start hundreds of
    nodes in one call (one user-data for all); each node learns its own name.
    ``token`` makes the call idempotent: a provider that sees a token again
    returns the nodes it launched for it instead of launching more.
    """

    cluster_id: str
    token: str
    role: Role
    pool: WorkerPool
    spec: NodeSpec
    names: tuple[str, ...]

    def node_spec(self, name: str) -> NodeSpec:
        return dataclasses.replace(self.spec, name=name)


@dataclass(frozen=True)
class LaunchFailure:
    """Part of a launch that failed, as a value: what, where, and how many nodes."""

    token: str
    error: RawCloudError
    count: int = 0  # nodes of the request this failure left unlaunched (0: another offer took them)
    offer: tuple[str, str, str, str] | None = None  # (type, region, zone id, market)


@dataclass(frozen=True)
class LaunchResult:
    """The nodes started for a request, in the order of its names, and what failed on the way."""

    nodes: tuple[Node, ...]
    failures: tuple[LaunchFailure, ...] = ()


#: The scheduler's node, as every cluster asks its provider for it.
SCHEDULER_POOL = WorkerPool(name="scheduler", cpu=1, memory="1GiB")
