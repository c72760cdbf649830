"""Which weights a run used: a fingerprint per engine spec for the ``runs`` table's lineage.

A spec names a model, not a version of it: ``hf:/models/llama`` can hold different weights next
month. The fingerprint hashes the folder's ``config.json`` and its weight files' names and sizes
(cheap, no full read of many GB), or gives the Hub commit a cached Hub id resolves to.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from infra.engines.spec import parse_spec

WEIGHTS = ("*.safetensors", "*.bin", "*.gguf", "*.pt")


def model_fingerprint(spec: str) -> dict[str, str]:
    """``{"spec", ...}`` plus ``sha256`` of a local folder, or the ``revision`` of a cached Hub id."""
    from infra.models import is_local_model, resolve_model

    parsed = parse_spec(spec)
    if parsed.kind == "openai":
        return {"spec": spec, "model": parsed.model, "served_by": parsed.base_url or ""}
    if not is_local_model(parsed.model) and not parsed.model.startswith(("/", ".", "~")):
        # A Hub id: the revision the cache holds (never a download for the sake of lineage).
        return {"spec": spec, "hub_id": parsed.model, "revision": _cached_revision(parsed.model) or "unknown"}
    try:
        folder = Path(resolve_model(parsed.model))
    except Exception as exc:  # lineage must not fail a finished run
        return {"spec": spec, "error": str(exc)}
    return {"spec": spec, "path": str(folder), "sha256": folder_digest(folder)}


def folder_digest(folder: Path) -> str:
    """config.json's bytes plus each weight file's relative name and size."""
    h = hashlib.sha256()
    config = folder / "config.json"
    if config.exists():
        h.update(config.read_bytes())
    for pattern in WEIGHTS:
        for f in sorted(folder.rglob(pattern)):
            h.update(f"{f.relative_to(folder)}:{f.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def _cached_revision(repo_id: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found).parent.name if isinstance(found, str) else None
