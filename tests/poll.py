"""Waiting in tests: poll a condition until a deadline, never a bare sleep."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.05) -> Any:
    """Return the first truthy value of ``condition()`` (sync or async), or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(every_s)


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.05) -> Any:
    """The same, for synchronous tests."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(every_s)


def run_then_kill(script: str, *args: str, env: dict[str, str], timeout_s: float = 120) -> str:
    """Run ``script`` in a new Python, read its first line, then SIGKILL it.

    The script prints one line once it has started what the test needs and
    then waits: the kill is a crash, with no cleanup of any kind.
    """
    import signal
    import subprocess
    import sys
    import threading

    child = subprocess.Popen([sys.executable, "-c", script, *args], env=env,
                             stdout=subprocess.PIPE, text=True)
    timer = threading.Timer(timeout_s, child.kill)  # a script that never prints fails the test
    timer.start()
    try:
        return child.stdout.readline().strip()
    finally:
        timer.cancel()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
