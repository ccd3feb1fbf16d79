"""What a node is started with: the agent command and its spec.

The spec holds the node's private key, so it is written 0600 and the agent
deletes it once read.
"""

from __future__ import annotations

import pathlib

from .model import NodeSpec
from .state import write_json

__all__ = ["node_command", "write_spec"]


def node_command(spec_file: pathlib.Path, python: str = "python3") -> list[str]:
    """The one command every provider boots every node with."""
    return [python, "-m", "dask_rawcloud.node", "--spec", str(spec_file)]


def write_spec(path: pathlib.Path, spec: NodeSpec) -> pathlib.Path:
    write_json(path, spec.to_dict(), private=True)
    return path
