"""The state directory: what this machine knows about its clusters.

A second shell, or the same user after their laptop rebooted, finds every
cluster here and can list or remove it. Layout::

    <state-dir>/<cluster-id>/cluster.json   ClusterRecord
    <state-dir>/<cluster-id>/tls/           the cluster's CA (ca.key is 0600)
    <state-dir>/<cluster-id>/nodes/         the local provider's node records

Writes are atomic (write to a temporary file, then rename), so a reader never
sees half a record.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ClusterNotFound, InvalidRequest

__all__ = ["ClusterRecord", "StateDir"]

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequest(
            f"cluster name {name!r} is not valid: use 1 to 40 lowercase letters, "
            "digits and '-', starting and ending with a letter or digit."
        )
    return name


def write_json(path: pathlib.Path, obj: Any, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        if not private:
            os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: pathlib.Path) -> Any:
    return json.loads(path.read_text())


@dataclass
class ClusterRecord:
    name: str
    provider: str
    created: float
    owner_pid: int
    provider_options: dict[str, Any] = field(default_factory=dict)
    scheduler_address: str | None = None
    dashboard_link: str | None = None
    tls: bool = True


class StateDir:
    """The clusters recorded under one state directory."""

    def __init__(self, root: pathlib.Path):
        self.root = pathlib.Path(root)

    def cluster_dir(self, name: str) -> pathlib.Path:
        return self.root / check_name(name)

    def save(self, record: ClusterRecord) -> None:
        write_json(self.cluster_dir(record.name) / "cluster.json", asdict(record))

    def load(self, name: str) -> ClusterRecord:
        path = self.cluster_dir(name) / "cluster.json"
        try:
            return ClusterRecord(**read_json(path))
        except FileNotFoundError:
            known = ", ".join(self.names()) or "none"
            raise ClusterNotFound(
                f"no cluster named {name!r} in {self.root} (known: {known}). "
                "Run `dask-rawcloud ls` to see the clusters."
            ) from None

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob("*/cluster.json"))

    def remove(self, name: str) -> None:
        shutil.rmtree(self.cluster_dir(name), ignore_errors=True)
