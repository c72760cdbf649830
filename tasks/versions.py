"""Installed package versions, for lineage in the ``runs`` table and on dataset cards."""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """``{name: version}`` for each installed distribution; absent ones are left out, not errors."""
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out
