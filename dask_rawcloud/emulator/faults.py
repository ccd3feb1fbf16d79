"""A fault-injecting HTTP proxy in front of an EC2 endpoint (a moto server), on 127.0.0.1.

moto never runs out of capacity, never throttles and ignores ClientToken.
AWS does all three, and the code that copes with them only runs if something
answers as AWS would. This proxy forwards every call and, for the calls it is
told to, answers in AWS's own shapes, so botocore's real parsing and retry
paths run:

- ``inject_capacity_error(instance_type=, zone=, market=)``: CreateFleet drops
  the matching overrides and reports each in its ``Errors`` list, as AWS does
  when one pool has no capacity and the next one serves;
- ``limit_instances(n)``: an account quota; a fleet launches what fits and
  reports ``VcpuLimitExceeded`` for the rest;
- ``throttle(action, times)``: ``RequestLimitExceeded`` (HTTP 503);
- ``fail(action, code, status=)``: any other AWS error, such as ``AuthFailure``;
- ``lose_responses(action, times)``: the call succeeds but its answer is lost
  (HTTP 500), so the client retries. CreateFleet answers a repeated
  ClientToken with the first answer, as AWS does and moto does not: a client
  that retries with a new token launches twice, and a test sees it.

``calls`` counts the requests seen by action, retries included.

The emulator hooks in here too: ``answer(action, fn)`` answers an action
itself (GetConsoleOutput from a node's log), and ``after(action, fn)`` sees
each successful answer before the client does (new instances get their
loopback addresses before anyone can describe them).
"""

from __future__ import annotations

import collections
import http.server
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import escape

__all__ = ["FaultProxy", "QuietHTTPServer"]

_OVERRIDE = "LaunchTemplateConfigs.1.Overrides."
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class QuietHTTPServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that does not print a traceback when a client hangs up."""

    daemon_threads = True

    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    def start_in_thread(self, name: str) -> None:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True, name=name)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


@dataclass
class _Capacity:
    instance_type: str | None
    zone: str | None  # zone name or zone id
    market: str | None
    code: str
    region: str | None = None

    def matches(self, instance_type: str, zones: tuple[str, str], market: str) -> bool:
        return ((self.instance_type in (None, instance_type))
                and (self.zone is None or self.zone in zones)
                and (self.region is None or zones[0].startswith(self.region))
                and (self.market in (None, market)))


def _error_xml(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code}</Code>'
            f"<Message>{escape(message)}</Message></Error></Errors>"
            f"<RequestID>{uuid.uuid4()}</RequestID></Response>").encode()


def _fleet_error(template: dict[str, str], override: dict[str, str], market: str,
                 code: str, message: str) -> str:
    fields = "".join(f"<{k[0].lower() + k[1:]}>{escape(v)}</{k[0].lower() + k[1:]}>"
                     for k, v in override.items() if k in ("InstanceType", "SubnetId"))
    return (
        "<item><launchTemplateAndOverrides><launchTemplateSpecification>"
        f"<launchTemplateId>{template.get('LaunchTemplateId', '')}</launchTemplateId>"
        f"<version>{template.get('Version', '')}</version></launchTemplateSpecification>"
        f"<overrides>{fields}</overrides></launchTemplateAndOverrides>"
        f"<lifecycle>{market}</lifecycle><errorCode>{code}</errorCode>"
        f"<errorMessage>{escape(message)}</errorMessage></item>"
    )


class FaultProxy:
    """Forward to ``upstream``, answering chosen calls as AWS would under faults.

    Use as a context manager, or call ``start`` and ``stop``. ``url`` is the
    endpoint to give clients.
    """

    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0):
        self.upstream = upstream.rstrip("/")
        self._capacity: list[_Capacity] = []
        self._throttles: collections.Counter[str] = collections.Counter()
        self._losses: collections.Counter[str] = collections.Counter()
        self._failures: collections.defaultdict[str, list[tuple[int, str, str]]] = (
            collections.defaultdict(list))
        self._instance_limit: int | None = None
        self._quota_code = "VcpuLimitExceeded"
        self._launched = 0
        self._fleets: dict[str, tuple[int, bytes]] = {}  # ClientToken -> answer
        self._zones: dict[str, tuple[str, str]] = {}  # subnet -> (zone name, zone id)
        self._lock = threading.Lock()
        self._answers: dict[str, Callable[[str, dict[str, str]], bytes | None]] = {}
        self._after: dict[str, list[Callable[[str, dict[str, str], bytes], None]]] = (
            collections.defaultdict(list))
        #: Requests seen, by action, retries included.
        self.calls: collections.Counter[str] = collections.Counter()
        #: (action, parameters) of every request, oldest first.
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._server = QuietHTTPServer((host, port), self._handler())

    @property
    def url(self) -> str:
        return self._server.url

    # -- faults ---------------------------------------------------------------
    def inject_capacity_error(self, instance_type: str | None = None, zone: str | None = None,
                              market: str | None = None, region: str | None = None,
                              code: str = "InsufficientInstanceCapacity") -> None:
        """CreateFleet finds no capacity for matching (type, zone, market, region) overrides."""
        with self._lock:
            self._capacity.append(_Capacity(instance_type, zone, market, code, region))

    def fail(self, action: str, code: str, message: str = "refused", status: int = 400,
             times: int = 1) -> None:
        """The next ``times`` calls of ``action`` fail with this AWS error."""
        with self._lock:
            self._failures[action].extend([(status, code, message)] * times)

    def limit_instances(self, total: int, code: str = "VcpuLimitExceeded") -> None:
        """An account quota: at most ``total`` instances launched through this proxy."""
        with self._lock:
            self._instance_limit, self._quota_code = total, code

    def throttle(self, action: str, times: int = 1) -> None:
        """The next ``times`` calls of ``action`` get RequestLimitExceeded."""
        with self._lock:
            self._throttles[action] += times

    def lose_responses(self, action: str, times: int = 1) -> None:
        """The next ``times`` calls of ``action`` succeed but their answers are lost."""
        with self._lock:
            self._losses[action] += times

    # -- hooks ----------------------------------------------------------------
    def answer(self, action: str, fn: Callable[[str, dict[str, str]], bytes | None]) -> None:
        """Answer ``action`` with ``fn(region, params)`` (an XML body), or forward on None."""
        self._answers[action] = fn

    def after(self, action: str, fn: Callable[[str, dict[str, str], bytes], None]) -> None:
        """Call ``fn(region, params, body)`` on each successful answer to ``action``."""
        self._after[action].append(fn)

    def clear(self) -> None:
        with self._lock:
            self._capacity.clear()
            self._throttles.clear()
            self._losses.clear()
            self._failures.clear()
            self._instance_limit = None

    # -- serving --------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._server.start_in_thread("rawcloud-fault-proxy")
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                status, answer = proxy._answer(self.path, headers, body)
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def _forward(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        request = urllib.request.Request(self.upstream + path, data=body or None,
                                         headers=headers, method="POST" if body else "GET")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        params = dict(urllib.parse.parse_qsl(body.decode()))
        action = params.get("Action", "")
        with self._lock:
            self.calls[action] += 1
            self.requests.append((action, params))
            if self._throttles[action] > 0:
                self._throttles[action] -= 1
                return 503, _error_xml("RequestLimitExceeded", "Request limit exceeded.")
            if self._failures[action]:
                status, code, message = self._failures[action].pop(0)
                return status, _error_xml(code, message)
            lose = self._losses[action] > 0
            if lose:
                self._losses[action] -= 1
        region = _region_of(headers)
        own = self._answers.get(action)
        mine = own(region, params) if own is not None else None
        if mine is not None:
            answer = 200, mine
        elif action == "CreateFleet":
            answer = self._create_fleet(path, headers, params)
        else:
            answer = self._forward(path, headers, body)
        if answer[0] == 200:
            for fn in self._after.get(action, ()):
                fn(region, params, answer[1])
        if lose:
            return 500, _error_xml("InternalError", "An internal error has occurred.")
        return answer

    # -- CreateFleet, as AWS answers it ---------------------------------------------
    def _create_fleet(self, path: str, headers: dict[str, str],
                      params: dict[str, str]) -> tuple[int, bytes]:
        token = params.get("ClientToken")
        with self._lock:
            if token and token in self._fleets:
                return self._fleets[token]
        market = params.get("TargetCapacitySpecification.DefaultTargetCapacityType", "on-demand")
        template = {k.rsplit(".", 1)[1]: v for k, v in params.items()
                    if k.startswith("LaunchTemplateConfigs.1.LaunchTemplateSpecification.")}
        overrides = self._overrides(params)
        errors, kept = [], []
        for o in overrides:
            zones = self._zone(headers, o.get("SubnetId", ""))
            rule = next((c for c in self._capacity
                         if c.matches(o.get("InstanceType", ""), zones, market)), None)
            if rule is None:
                kept.append(o)
            else:
                errors.append(_fleet_error(template, o, market, rule.code,
                                           "There is no capacity for this instance type here."))
        wanted = int(params.get("TargetCapacitySpecification.TotalTargetCapacity", "0"))
        allowed = wanted
        with self._lock:
            if self._instance_limit is not None:
                allowed = max(0, min(wanted, self._instance_limit - self._launched))
        if allowed < wanted and kept:
            errors.append(_fleet_error(template, kept[0], market, self._quota_code,
                                       f"You have requested more vCPU capacity than your "
                                       f"current limit allows ({self._instance_limit} instances)."))
        if kept and allowed:
            params = {k: v for k, v in params.items() if not k.startswith(_OVERRIDE)}
            for i, o in enumerate(kept, 1):
                params.update({f"{_OVERRIDE}{i}.{k}": v for k, v in o.items()})
            for key in ("TotalTargetCapacity", "OnDemandTargetCapacity", "SpotTargetCapacity"):
                if f"TargetCapacitySpecification.{key}" in params:
                    params[f"TargetCapacitySpecification.{key}"] = str(allowed)
            status, answer = self._forward(path, headers, urllib.parse.urlencode(params).encode())
        else:
            status, answer = 200, (
                '<?xml version="1.0" encoding="utf-8"?><CreateFleetResponse '
                'xmlns="http://ec2.amazonaws.com/doc/2016-11-15">'
                f"<fleetId>fleet-{uuid.uuid4()}</fleetId><fleetInstanceSet/>"
                "<requestId>fault-proxy</requestId></CreateFleetResponse>").encode()
        if status == 200:
            with self._lock:
                self._launched += answer.count(b"<instanceIds><item>")
            if errors:
                answer = answer.replace(b"</CreateFleetResponse>",
                                        f"<errorSet>{''.join(errors)}</errorSet>"
                                        "</CreateFleetResponse>".encode())
            if token:
                with self._lock:
                    self._fleets[token] = (status, answer)
        return status, answer

    @staticmethod
    def _overrides(params: dict[str, str]) -> list[dict[str, str]]:
        by_index: dict[int, dict[str, str]] = collections.defaultdict(dict)
        for key, value in params.items():
            if key.startswith(_OVERRIDE):
                index, field = key[len(_OVERRIDE):].split(".", 1)
                by_index[int(index)][field] = value
        return [by_index[i] for i in sorted(by_index)]

    def _zone(self, headers: dict[str, str], subnet: str) -> tuple[str, str]:
        """(zone name, zone id) of a subnet, asked of the upstream once."""
        if subnet not in self._zones:
            import boto3  # only the proxy's own look-up, never a real account

            region = _region_of(headers)
            client = boto3.client("ec2", endpoint_url=self.upstream, region_name=region,
                                  aws_access_key_id="proxy", aws_secret_access_key="proxy")
            for s in client.describe_subnets()["Subnets"]:
                self._zones[s["SubnetId"]] = (s["AvailabilityZone"], s["AvailabilityZoneId"])
        return self._zones.get(subnet, ("", ""))


def _region_of(headers: dict[str, str]) -> str:
    """The region a SigV4-signed request names in its credential scope."""
    auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    try:
        return auth.split("Credential=", 1)[1].split("/")[2]
    except IndexError:
        return "us-east-1"
