"""Providers by name. ``local`` is embedded; others load on first use."""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import UnknownProvider
from .base import Provider

__all__ = ["Provider", "get_provider", "provider_names"]

_REGISTRY = {
    "local": "dask_rawcloud.providers.local:LocalProvider",
    "aws": "dask_rawcloud.providers.aws:AWSProvider",
}


def provider_names() -> list[str]:
    return sorted(_REGISTRY)


def get_provider(name: str, **options: Any) -> Provider:
    """Construct the provider registered as ``name``."""
    if name not in _REGISTRY:
        raise UnknownProvider(
            f"unknown provider {name!r}: choose one of {', '.join(provider_names())} "
            "(set provider= or rawcloud.provider)."
        )
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)(**options)
