"""What a node is started with: the agent command, its spec, and a VM's user-data.

The spec holds the node's private key, so it is written 0600 and the agent
deletes it once read. On a VM it travels inside the user-data, gzipped, which
keeps a TLS-enabled user-data near 3 KB, far under EC2's 16 KB limit.

The user-data has two marked parts: *prepare* installs the client's exact
package versions (skipped when the image already has them), and *node* writes
the spec and runs the one agent command. The emulator boots the *node* part
and reports that it skipped *prepare*.
"""

from __future__ import annotations

import base64
import gzip
import importlib.metadata
import json
import pathlib
import re
import shlex
import sys
from collections.abc import Sequence
from typing import NamedTuple

from .model import NodeSpec
from .state import write_json

__all__ = ["BootScript", "node_command", "parse_user_data", "pinned_packages", "user_data", "write_spec"]

PREPARE_MARK = "# --- dask-rawcloud: prepare ---"
NODE_MARK = "# --- dask-rawcloud: node ---"
SPEC_PATH = "/run/dask-rawcloud/spec"
#: EC2 refuses user-data over 16 KB (before base64).
USER_DATA_LIMIT = 16 * 1024


def node_command(spec_file: pathlib.Path | str, python: str = "python3") -> list[str]:
    """The one command every provider boots every node with."""
    return [python, "-m", "dask_rawcloud.node", "--spec", str(spec_file)]


def write_spec(path: pathlib.Path, spec: NodeSpec) -> pathlib.Path:
    write_json(path, spec.to_dict(), private=True)
    return path


def pinned_packages(extra: Sequence[str] = ()) -> list[str]:
    """The client's own versions of what a node needs, then the user's extras."""
    pins = [f"{name}=={importlib.metadata.version(name)}"
            for name in ("dask", "distributed", "dask-rawcloud")]
    return pins + list(extra)


def _python() -> str:
    return f"python{sys.version_info.major}.{sys.version_info.minor}"


def user_data(spec: NodeSpec, packages: Sequence[str]) -> str:
    """The shell script a VM boots: prepare its Python, then run the node agent.

    Whatever happens, the script ends by powering the machine off, which
    terminates it (InstanceInitiatedShutdownBehavior=terminate).
    """
    python = _python()
    blob = base64.b64encode(gzip.compress(json.dumps(spec.to_dict()).encode(), mtime=0)).decode()
    pins = [p for p in packages if "==" in p]
    check = "; ".join(
        f"assert m.version({name!r}) == {version!r}"
        for name, version in (p.split("==", 1) for p in pins)
    )
    script = f"""#!/bin/bash
# dask-rawcloud node of cluster {spec.cluster_id} ({spec.role})
exec > >(tee -a /var/log/dask-rawcloud.log > /dev/console) 2>&1
trap 'shutdown -h now' EXIT
{PREPARE_MARK}
if ! command -v {python} >/dev/null; then
  dnf install -y -q {python} {python}-pip || (apt-get update -q && apt-get install -y -q {python} {python}-venv python3-pip)
fi
if ! {python} -c "import importlib.metadata as m; {check}" 2>/dev/null; then
  {python} -m pip install -q {' '.join(shlex.quote(p) for p in packages)}
fi
{NODE_MARK}
umask 077
mkdir -p {SPEC_PATH.rsplit('/', 1)[0]}
base64 -d > {SPEC_PATH} <<'SPEC'
{blob}
SPEC
{shlex.join(node_command(SPEC_PATH, python))}
"""
    if len(script.encode()) > USER_DATA_LIMIT:
        raise ValueError(f"user-data is {len(script.encode())} bytes, over EC2's 16 KB limit")
    return script


class BootScript(NamedTuple):
    """What a user-data holds, as the emulator boots it."""

    spec: bytes  # gzipped JSON NodeSpec
    prepare: list[str]  # the environment-preparation lines
    command: list[str]  # the node agent command, reading the spec from SPEC_PATH


def parse_user_data(script: str) -> BootScript:
    """The spec, the prepare lines and the agent command a user-data carries."""
    match = re.search(r"<<'SPEC'\n(.*?)\nSPEC\n(.*)", script, re.S)
    if not match or PREPARE_MARK not in script:
        raise ValueError("not a dask-rawcloud user-data: no node spec in it")
    prepare = script.split(PREPARE_MARK, 1)[1].split(NODE_MARK, 1)[0]
    command = next((shlex.split(line) for line in match.group(2).splitlines() if line.strip()), [])
    return BootScript(base64.b64decode(match.group(1)),
                      [line for line in prepare.splitlines() if line.strip()], command)
