"""The instance metadata service, as a node agent on a VM reads it (IMDSv2).

``AWS_EC2_METADATA_SERVICE_ENDPOINT`` points it elsewhere (the emulator's
own metadata service), exactly as it does for botocore.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request

DEFAULT_ENDPOINT = "http://169.254.169.254"
_TOKEN_TTL_S = "21600"


class Metadata:
    """Reads ``/latest/meta-data/...`` with a session token, as IMDSv2 requires."""

    def __init__(self, endpoint: str | None = None, timeout_s: float = 2.0):
        self.endpoint = (
            endpoint or os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or DEFAULT_ENDPOINT
        ).rstrip("/")
        self.timeout_s = timeout_s
        self._token: str | None = None

    def _open(self, request: urllib.request.Request) -> str:
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            return response.read().decode()

    def token(self) -> str:
        if self._token is None:
            self._token = self._open(urllib.request.Request(
                f"{self.endpoint}/latest/api/token", method="PUT",
                headers={"X-aws-ec2-metadata-token-ttl-seconds": _TOKEN_TTL_S},
            ))
        return self._token

    def get(self, path: str) -> str | None:
        """The value at ``meta-data/<path>``, or None where the service has none (404)."""
        request = urllib.request.Request(
            f"{self.endpoint}/latest/meta-data/{path}",
            headers={"X-aws-ec2-metadata-token": self.token()},
        )
        try:
            return self._open(request)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            if e.code == 401:  # the token expired: take a new one once
                self._token = None
                request.headers["X-aws-ec2-metadata-token"] = self.token()
                return self._open(request)
            raise
