"""Elastic Dask clusters on raw cloud VMs, with no Kubernetes."""

from . import config as _config  # noqa: F401  (registers the rawcloud.* defaults)
from .adaptive import RawCloudAdaptive
from .cluster import RawCloudCluster
from .connect import connect
from .errors import (
    BootError,
    CapacityError,
    ClusterExists,
    ClusterNotFound,
    CredentialsError,
    ImageNotFound,
    InfeasibleRequest,
    InvalidRequest,
    LaunchError,
    NodeTooLarge,
    ProviderError,
    QuotaExceeded,
    RawCloudError,
    Throttled,
    UnknownProvider,
)
from .model import WorkerPool

__version__ = "0.1.0"

__all__ = [
    "BootError",
    "CapacityError",
    "ClusterExists",
    "ClusterNotFound",
    "CredentialsError",
    "ImageNotFound",
    "InfeasibleRequest",
    "InvalidRequest",
    "LaunchError",
    "NodeTooLarge",
    "ProviderError",
    "QuotaExceeded",
    "RawCloudAdaptive",
    "RawCloudCluster",
    "RawCloudError",
    "Throttled",
    "UnknownProvider",
    "WorkerPool",
    "connect",
]
