"""Reach a running cluster by name from another process."""

from __future__ import annotations

from typing import Any

from distributed import Client
from distributed.security import Security

from .config import settings
from .security import CertificateAuthority
from .state import StateDir


def client_security(name: str, state: StateDir | None = None) -> Security:
    """A fresh client certificate from the cluster's CA (or none, without TLS)."""
    state = state or StateDir(settings().state_dir)
    record = state.load(name)
    if not record.tls:
        return Security()
    return CertificateAuthority.load(state.cluster_dir(name) / "tls").client_security()


def connect(name: str, **client_kwargs: Any) -> Client:
    """A ``Client`` of the running cluster ``name``, with its TLS set up.

    >>> client = connect("my-cluster")  # doctest: +SKIP
    """
    state = StateDir(settings().state_dir)
    record = state.load(name)
    return Client(record.scheduler_address, security=client_security(name, state), **client_kwargs)
