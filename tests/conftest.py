"""Shared fixtures: an isolated state directory, no cloud credentials, no leaks."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
import uuid

import dask.config
import psutil
import pytest

from dask_rawcloud.providers.local import node_processes

_STATE = pathlib.Path(tempfile.mkdtemp(prefix="rawcloud-test-state-"))
# Set before anything reads it, and inherited by every subprocess a test starts.
os.environ["DASK_RAWCLOUD__STATE_DIR"] = str(_STATE)
dask.config.set({"rawcloud.state-dir": str(_STATE)})
# Inherited by every node this session starts, so the leak check counts only ours.
_SESSION = uuid.uuid4().hex
os.environ["RAWCLOUD_TEST_SESSION"] = _SESSION
# Nodes run tasks from tests/tasks.py, so they import from here as any user's
# workers import the user's modules: the environment is the same.
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(pathlib.Path(__file__).parent), os.environ.get("PYTHONPATH")])
)


@pytest.fixture(scope="session", autouse=True)
def no_leaks_after_the_suite():
    """After every test: no node process and no recorded cluster may remain."""
    yield
    leaked = {}
    for p in node_processes():
        try:
            if p.environ().get("RAWCLOUD_TEST_SESSION") == _SESSION:
                leaked[p.pid] = " ".join(p.cmdline())
                p.kill()
        except psutil.Error:
            pass  # ended meanwhile
    leftover = sorted(p.name for p in _STATE.iterdir())
    shutil.rmtree(_STATE, ignore_errors=True)
    assert not leaked, f"node processes leaked: {leaked}"
    assert not leftover, f"cluster state left behind: {leftover}"


@pytest.fixture(autouse=True)
def no_cloud_credentials(monkeypatch, tmp_path):
    """No test can reach a real cloud account, whatever the machine has set up."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))


@pytest.fixture
def state_dir() -> pathlib.Path:
    return _STATE
