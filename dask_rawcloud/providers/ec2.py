"""The one door to EC2: a client per region, every call counted, every error translated once.

Everything the AWS provider asks of EC2 goes through :meth:`EC2.call`, so
there is one place that counts API calls (what the launch benchmark reports),
one retry policy (botocore's standard mode: exponential backoff with jitter
on throttling, resending the same parameters and so the same ClientToken),
and one table from AWS error codes to the tree in ``errors.py``.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import re
import time
from typing import Any

from aiobotocore.config import AioConfig
import botocore.session
from aiobotocore.session import get_session
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from ..errors import (
    CapacityError,
    CredentialsError,
    ImageNotFound,
    InvalidRequest,
    ProviderError,
    QuotaExceeded,
    RawCloudError,
    Throttled,
)

__all__ = ["EC2", "error_for", "known_regions"]

# AWS error code (or its prefix before the first '.') -> what it means here.
_CODES: dict[str, type[RawCloudError]] = {
    "InsufficientInstanceCapacity": CapacityError,
    "InsufficientCapacity": CapacityError,
    "InsufficientHostCapacity": CapacityError,
    "InsufficientSpotInstanceCapacity": CapacityError,
    "SpotMaxPriceTooLow": CapacityError,
    "UnfulfillableCapacity": CapacityError,
    "Unsupported": CapacityError,  # the type is not offered in that zone
    "VcpuLimitExceeded": QuotaExceeded,
    "MaxSpotInstanceCountExceeded": QuotaExceeded,
    "InstanceLimitExceeded": QuotaExceeded,
    "RequestLimitExceeded": Throttled,
    "Throttling": Throttled,
    "ThrottlingException": Throttled,
    "InvalidAMIID": ImageNotFound,
    "AuthFailure": CredentialsError,
    "UnauthorizedOperation": CredentialsError,
    "InvalidClientTokenId": CredentialsError,
    "SignatureDoesNotMatch": CredentialsError,
    "OptInRequired": CredentialsError,
    "InvalidInstanceType": InvalidRequest,
    "InvalidParameterValue": InvalidRequest,
    "InvalidParameterCombination": InvalidRequest,
}

_FIXES: dict[type[RawCloudError], str] = {
    CapacityError: "The next offer is tried; allow more instance types, zones or "
                   "regions (WorkerPool instance_types=, regions=) or market='spot_with_fallback'.",
    QuotaExceeded: "Ask AWS for a higher limit (Service Quotas), or lower the pool's maximum.",
    Throttled: "Too many calls to EC2 from this account; retry later or raise "
               "rawcloud.aws.max-attempts.",
    ImageNotFound: "Check the AMI id and its region (image= or rawcloud.aws.image), or leave "
                   "it unset to use the current Amazon Linux.",
    CredentialsError: "Set AWS credentials (AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
                      "AWS_SECRET_ACCESS_KEY) for an account that may use EC2 in this region.",
    InvalidRequest: "Fix the request and try again; nothing was started.",
}


def error_for(code: str, message: str, operation: str, region: str) -> RawCloudError:
    """The error of our tree for an AWS error code, naming the problem and the fix."""
    kind = _CODES.get(code) or _CODES.get(code.split(".")[0], ProviderError)
    fix = _FIXES.get(kind, "")
    error = kind(f"EC2 {operation} in {region} failed: {code}: {message}. {fix}".rstrip())
    error.code = code  # type: ignore[attr-defined]
    return error


@functools.cache
def known_regions() -> list[str]:
    """Every EC2 region botocore knows, in every partition (static data, no call)."""
    session = botocore.session.get_session()
    return sorted({
        r for partition in session.get_available_partitions()
        for r in session.get_available_regions("ec2", partition)
    })


def _snake(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


class EC2:
    """EC2 clients by region, held for the provider's life.

    Parameters
    ----------
    endpoint_url : str, optional
        Another EC2 endpoint (the emulator's, a moto server).
    max_attempts : int
        Attempts per call under botocore's standard retry mode.
    """

    def __init__(self, endpoint_url: str | None = None, max_attempts: int = 8):
        self.endpoint_url = endpoint_url
        self._config = AioConfig(
            retries={"mode": "standard", "max_attempts": max_attempts},
            connect_timeout=10,
            read_timeout=60,
        )
        self._session = get_session()
        self._clients: dict[str, Any] = {}
        self._stack = contextlib.AsyncExitStack()
        #: Calls made, by operation; retries of one call count once.
        self.calls: collections.Counter[str] = collections.Counter()
        #: Wall seconds spent waiting on EC2, by operation (the rest of a launch is ours).
        self.seconds: collections.Counter[str] = collections.Counter()
        #: HTTP attempts beyond the first, summed over all calls.
        self.retries = 0

    def has_credentials(self) -> bool:
        """Whether botocore finds credentials (environment, files, SSO); no call is made."""
        return botocore.session.get_session().get_credentials() is not None

    async def client(self, region: str) -> Any:
        if region not in self._clients:
            self._clients[region] = await self._stack.enter_async_context(
                self._session.create_client(
                    "ec2", region_name=region, endpoint_url=self.endpoint_url, config=self._config
                )
            )
        return self._clients[region]

    async def call(self, region: str, operation: str, **params: Any) -> dict[str, Any]:
        """Call ``operation`` (as AWS spells it, e.g. "CreateFleet") in ``region``."""
        client = await self.client(region)
        self.calls[operation] += 1
        started = time.perf_counter()
        try:
            response = await getattr(client, _snake(operation))(**params)
        except ClientError as e:
            self.retries += e.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
            error = e.response.get("Error", {})
            raise error_for(error.get("Code", "Unknown"), error.get("Message", str(e)),
                            operation, region) from None
        except (NoCredentialsError, PartialCredentialsError) as e:
            raise CredentialsError(f"no usable AWS credentials: {e}. {_FIXES[CredentialsError]}") from None
        except NoRegionError:
            raise InvalidRequest("no AWS region given: set region= or rawcloud.aws.region.") from None
        except EndpointConnectionError as e:
            raise ProviderError(f"cannot reach EC2 in {region}: {e}. Check the network, or "
                                "endpoint_url= / rawcloud.aws.endpoint-url.") from None
        finally:
            self.seconds[operation] += time.perf_counter() - started
        self.retries += response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
        return response

    async def pages(self, region: str, operation: str, key: str, **params: Any) -> list[Any]:
        """Every item under ``key`` across NextToken pages."""
        items: list[Any] = []
        while True:
            response = await self.call(region, operation, **params)
            items.extend(response.get(key, []))
            token = response.get("NextToken")
            if not token:
                return items
            params["NextToken"] = token

    async def close(self) -> None:
        await self._stack.aclose()
        self._clients.clear()
