"""The dask-rawcloud command, run as users run it: in separate processes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dask_rawcloud import connect
from dask_rawcloud.providers.local import node_processes
from poll import wait_until


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dask_rawcloud.cli", *args],
        capture_output=True, text=True, timeout=timeout,
    )


@pytest.mark.timeout(120)
def test_up_ls_connect_down_from_separate_shells():
    up = cli("up", "--name", "from-shell", "--workers", "2")
    assert up.returncode == 0, up.stderr
    assert "tls://127.0.0.1:" in up.stdout and "http://127.0.0.1:" in up.stdout
    try:
        listed = json.loads(cli("ls", "--json").stdout)
        (entry,) = [c for c in listed if c["name"] == "from-shell"]
        assert entry["provider"] == "local"
        assert sorted(n["role"] for n in entry["nodes"]) == ["scheduler", "worker", "worker"]

        with connect("from-shell") as client:
            client.wait_for_workers(2, timeout=60)
            assert client.submit(sum, [1, 2, 3]).result() == 6

        again = cli("up", "--name", "from-shell")
        assert again.returncode == 2
        assert "already exists" in again.stderr and "dask-rawcloud down from-shell" in again.stderr
    finally:
        down = cli("down", "from-shell")
    assert down.returncode == 0, down.stderr
    assert "3 nodes terminated" in down.stdout
    assert not node_processes("from-shell")
    assert "from-shell" not in cli("ls").stdout


@pytest.mark.timeout(30)
def test_down_of_an_unknown_name_fails_clearly():
    result = cli("down", "no-such-cluster")
    assert result.returncode == 2
    assert "no cluster named 'no-such-cluster'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "args, words",
    [
        (["up", "--adapt", "5:2"], "minimum 5 > maximum 2"),
        (["up", "--adapt", "x"], "is not MIN:MAX"),
        (["up", "--worker-cpu", "abc"], "--worker-cpu must be a whole number"),
        (["up", "--worker-memory", "-4GiB"], "worker memory must be a size"),
        (["up", "--provider", "nimbus"], "unknown provider 'nimbus'"),
        (["up", "--worker-cpu", "4096"], "does not fit this machine"),
    ],
)
def test_up_rejects_bad_input_and_starts_nothing(args, words):
    result = cli(*args)
    assert result.returncode == 2
    assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert not node_processes()
    assert cli("ls", "--json").stdout.strip() == "[]"


@pytest.mark.timeout(180)
def test_demo_scales_up_and_back_to_zero_and_reports(tmp_path):
    out = tmp_path / "demo.json"
    result = cli("demo", "--json", str(out), timeout=170)
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(out.read_text())
    assert figures["ok"] is True
    assert 0 < figures["busy_worker_s"] <= figures["connected_worker_s"]
    assert figures["end_to_zero_s"] >= 0
    assert figures["peak_workers"] >= 2
    assert "demo ok:" in result.stdout
    wait_until(lambda: not node_processes(), 10, "no node process after the demo")
