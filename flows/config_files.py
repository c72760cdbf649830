"""Parameter files for flows and deployments: JSON or YAML, chosen by the file's suffix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_config(path: Path) -> dict[str, Any]:
    """The mapping in ``path``; a clear ValueError for a missing file, bad syntax or a non-mapping."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read the config file {path}: {exc.strerror}") from exc
    import yaml

    try:
        data = yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot parse the config file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(
            f"the config file {path} must hold a mapping of parameters, not {type(data).__name__}"
        )
    return data
