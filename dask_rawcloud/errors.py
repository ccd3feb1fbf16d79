"""Every error dask-rawcloud raises, translated once at the boundary.

::

    RawCloudError
     ├── InvalidRequest (ValueError)      bad input, raised before anything is started
     │    ├── UnknownProvider             provider name not registered
     │    ├── NodeTooLarge                no machine type of the provider can hold the node
     │    ├── InfeasibleRequest           tasks ask for resources no worker pool provides
     │    ├── ImageNotFound               the machine image does not exist or is not usable
     │    └── CredentialsError            no cloud credentials, or the cloud refused them
     ├── ClusterExists                    a name already in use
     ├── ClusterNotFound (LookupError)    no cluster by that name
     ├── ProviderError                    the provider could not do what it was asked
     │    ├── LaunchError                 nodes could not be started
     │    │    ├── CapacityError          no capacity for an offer (type, zone, market): try the next
     │    │    └── QuotaExceeded          an account limit (vCPUs, spot instances) stops the launch
     │    └── Throttled                   the cloud kept refusing calls as too many, after backoff
     └── BootError                        a node started but never became ready; carries its log

Each message names the problem and the fix.
"""

from __future__ import annotations

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
    "RawCloudError",
    "Throttled",
    "UnknownProvider",
]


class RawCloudError(Exception):
    """Base of every error raised by dask-rawcloud."""


class InvalidRequest(RawCloudError, ValueError):
    """The request cannot be met as written; nothing was started."""


class UnknownProvider(InvalidRequest):
    """No provider is registered under that name."""


class NodeTooLarge(InvalidRequest):
    """No machine the provider offers can hold the requested node."""


class InfeasibleRequest(InvalidRequest):
    """Tasks ask for resources that no worker pool of the cluster provides."""


class ImageNotFound(InvalidRequest):
    """The machine image (AMI) does not exist, or is not available in that region."""


class CredentialsError(InvalidRequest):
    """No cloud credentials were found, or the cloud refused them."""


class ClusterExists(RawCloudError):
    """A live cluster already uses that name."""


class ClusterNotFound(RawCloudError, LookupError):
    """No cluster is recorded under that name."""


class ProviderError(RawCloudError):
    """The provider failed to carry out a request."""


class LaunchError(ProviderError):
    """Nodes could not be launched."""


class CapacityError(LaunchError):
    """The cloud has no capacity for one offer right now; the next offer may have some."""


class QuotaExceeded(LaunchError):
    """An account limit stops the launch; what fits was launched."""


class Throttled(ProviderError):
    """The cloud still refused calls as too frequent after retries with backoff."""


class BootError(RawCloudError):
    """A node was launched but did not become ready.

    ``log`` holds the tail of the node's own log, so the cause is visible
    without logging in anywhere.
    """

    def __init__(self, message: str, log: str = ""):
        self.log = log
        if log:
            message = f"{message}\n--- node log (last lines) ---\n{log}"
        super().__init__(message)
