"""Scheduler-side watchdogs: the cluster ends itself when nobody needs it.

Idle time is watched by distributed's own ``idle_timeout``. This plugin adds
the two it lacks:

- no client: no ``Client`` connected and no heartbeat from the
  ``RawCloudCluster`` object for ``no_client_timeout_s``, which is what
  happens when the laptop that started the cluster dies;
- max lifetime: the scheduler has lived ``max_lifetime_s``.

When the scheduler closes it closes its workers, and every node agent powers
its node off.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from distributed.diagnostics.plugin import SchedulerPlugin
from tornado.ioloop import PeriodicCallback

logger = logging.getLogger(__name__)

HEARTBEAT_HANDLER = "rawcloud_heartbeat"
# distributed registers this client itself; it is not a user.
_INTERNAL_CLIENTS = {"fire-and-forget"}


@dataclass
class Expiry:
    """When to give up on a cluster. Pure, so it is tested with plain numbers."""

    started: float
    no_client_timeout_s: float | None
    max_lifetime_s: float | None
    last_contact: float = 0.0

    def __post_init__(self) -> None:
        self.last_contact = self.started

    def reason(self, now: float, has_client: bool) -> str | None:
        if has_client:
            self.last_contact = now
        if self.max_lifetime_s is not None and now - self.started >= self.max_lifetime_s:
            return f"max-lifetime ({self.max_lifetime_s:g}s) reached"
        if (
            self.no_client_timeout_s is not None
            and now - self.last_contact >= self.no_client_timeout_s
        ):
            return f"no client for {self.no_client_timeout_s:g}s"
        return None


def check_interval_s(*timeouts: float | None) -> float:
    """Check often enough to act within a tenth of the shortest timeout."""
    shortest = min((t for t in timeouts if t), default=None)
    return 5.0 if shortest is None else min(5.0, max(0.1, shortest / 10))


class Watchdog(SchedulerPlugin):
    name = "rawcloud-watchdog"

    def __init__(self, no_client_timeout_s: float | None, max_lifetime_s: float | None):
        self.expiry = Expiry(time.monotonic(), no_client_timeout_s, max_lifetime_s)
        self.interval_s = check_interval_s(no_client_timeout_s, max_lifetime_s)

    async def start(self, scheduler) -> None:
        self.scheduler = scheduler
        self.expiry = Expiry(time.monotonic(), *self._timeouts())
        scheduler.handlers[HEARTBEAT_HANDLER] = self.heartbeat
        pc = PeriodicCallback(self.check, self.interval_s * 1000)
        scheduler.periodic_callbacks[self.name] = pc
        pc.start()

    def _timeouts(self) -> tuple[float | None, float | None]:
        return self.expiry.no_client_timeout_s, self.expiry.max_lifetime_s

    def heartbeat(self) -> None:
        """Called by a live RawCloudCluster object: it counts as a client."""
        self.expiry.last_contact = time.monotonic()

    def check(self) -> None:
        has_client = bool(set(self.scheduler.clients) - _INTERNAL_CLIENTS)
        reason = self.expiry.reason(time.monotonic(), has_client)
        if reason and self.scheduler.status.name == "running":
            logger.info("Closing the cluster: %s", reason)
            self.scheduler._ongoing_background_tasks.call_soon(
                self.scheduler.close, reason=f"rawcloud: {reason}"
            )
