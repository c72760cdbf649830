"""Where model weights come from: local folders, aliases of bundled models, or Hub ids (offline)."""

from __future__ import annotations

from pathlib import Path

from infra.engines.base import EngineError

ALIASES = ("smollm2", "smollm2-135m-instruct")


def resolve_model(name_or_path: str) -> str:
    """An alias -> its converted folder; a local folder -> itself; anything else -> a Hub id as-is.

    A name that looks like a path (starts with '/', '.', '~') but does not exist is an error here,
    not a confusing download attempt later.
    """
    if name_or_path.lower() in ALIASES:
        from .smollm2 import smollm2_path

        return str(smollm2_path())
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path)
    if name_or_path.startswith(("/", ".", "~")) or path.exists():
        raise EngineError(f"model path {name_or_path!r} does not exist or is not a folder")
    return name_or_path
