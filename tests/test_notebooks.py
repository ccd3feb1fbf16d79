"""The notebooks run top to bottom in a real kernel, as a user runs them."""

from __future__ import annotations

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

from dask_rawcloud.providers.local import node_processes

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    before = {p.pid for p in node_processes()}
    try:
        NotebookClient(notebook, timeout=240, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        leaked = [p for p in node_processes() if p.pid not in before]
        for p in leaked:
            p.kill()
    assert not leaked, "the notebook left node processes running"


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["rehearse_aws.ipynb"]
