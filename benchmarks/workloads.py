"""Task functions for the benchmarks. Nodes import this module: benchmarks
put this folder on PYTHONPATH before any node starts."""

import time


def sleep_task(i: int, seconds: float) -> int:
    time.sleep(seconds)
    return i
