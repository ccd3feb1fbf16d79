"""Task functions for tests; conftest puts this folder on the nodes' PYTHONPATH."""

from __future__ import annotations

import time


def slow_inc(x: int, seconds: float = 0.5) -> int:
    time.sleep(seconds)
    return x + 1


def payload(n: int) -> bytes:
    return b"x" * n
