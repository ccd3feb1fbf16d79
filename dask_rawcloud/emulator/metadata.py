"""An instance metadata service (IMDSv2) for emulated instances, on 127.0.0.1.

On EC2 every instance reaches its own metadata at 169.254.169.254. Here one
server serves every instance, each under its own path prefix: a node finds
``http://127.0.0.1:PORT/i-0abc...`` in ``AWS_EC2_METADATA_SERVICE_ENDPOINT``,
the variable botocore and ``dask_rawcloud.imds`` both honour, and asks for
``/latest/meta-data/...`` below it. As on EC2, a token from
``PUT /latest/api/token`` is required (IMDSv2, HttpTokens=required).
"""

from __future__ import annotations

import http.server
import secrets
import threading
from typing import Any

from .faults import QuietHTTPServer

__all__ = ["MetadataService"]


class MetadataService:
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._data: dict[str, dict[str, str]] = {}
        self._tokens: set[str] = set()
        self._lock = threading.Lock()
        self._server = QuietHTTPServer((host, port), self._handler())

    @property
    def url(self) -> str:
        return self._server.url

    def endpoint(self, instance_id: str) -> str:
        """What the instance's ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` is."""
        return f"{self.url}/{instance_id}/"

    def put(self, instance_id: str, **values: str) -> None:
        """Set metadata paths, e.g. ``put(i, **{"local-ipv4": "127.9.0.1"})``."""
        with self._lock:
            self._data.setdefault(instance_id, {}).update(values)

    def start(self) -> MetadataService:
        self._server.start_in_thread("rawcloud-metadata")
        return self

    def stop(self) -> None:
        self._server.stop()

    def _answer(self, method: str, path: str, headers: Any) -> tuple[int, str]:
        instance_id, _, rest = path.lstrip("/").partition("/")
        with self._lock:
            data = self._data.get(instance_id)
            if data is None:
                return 404, "unknown instance"
            if rest == "latest/api/token":
                if method != "PUT" or not headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    return 400, "a token is taken with PUT and a TTL header"
                token = secrets.token_urlsafe(24)
                self._tokens.add(token)
                return 200, token
            if headers.get("X-aws-ec2-metadata-token") not in self._tokens:
                return 401, "IMDSv2: a session token is required"
            key = rest.removeprefix("latest/meta-data/")
            if key == rest or key not in data:
                return 404, "not found"
            return 200, data[key]

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self) -> None:
                length = int(self.headers.get("Content-Length", 0) or 0)
                if length:
                    self.rfile.read(length)
                status, text = service._answer(self.command, self.path, self.headers)
                body = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = _reply  # noqa: N815 (http.server's naming)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler
