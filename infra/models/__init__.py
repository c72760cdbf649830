"""Where model weights come from: local folders, aliases of bundled models, or the Hugging Face Hub.

A Hub id is downloaded on a connected machine (with the Hub's progress bars) into the usual Hub
cache, once; later runs find it there. Offline mode (``HF_HUB_OFFLINE=1`` or ``offline=True``)
uses the cache only, and a model that is not there is a one-line error naming it. Nothing here
forces offline mode: a local folder or the bundled model never touches the network anyway.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from tasks.engine import EngineError

ALIASES = ("smollm2", "smollm2-135m-instruct")

# What a model folder needs besides its weights; with ``files="tokenizer"`` only these are fetched.
TOKENIZER_FILES = ["*.json", "*.model", "*.tiktoken", "*.txt", "*.jinja", "*.py"]
PYTORCH_WEIGHTS = ["*.bin", "*.pt", "*.pth"]  # skipped where a repo has safetensors too
SKIPPED = ["original/*", "*.gguf", "*.onnx", "onnx/*", "*.msgpack", "*.h5", "*.ot", "*.tflite", "coreml/*"]


def is_offline(offline: bool | None = None) -> bool:
    """``offline`` when given, else the Hub's own switch (``HF_HUB_OFFLINE``)."""
    if offline is not None:
        return offline
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def go_offline() -> None:
    """Offline for this process and the Ray workers it starts (they take its environment): call it
    before Ray starts."""
    os.environ["HF_HUB_OFFLINE"] = "1"


def is_local_model(name_or_path: str) -> bool:
    """A bundled alias or a local folder: loading it never needs the network."""
    return name_or_path.lower() in ALIASES or Path(name_or_path).expanduser().is_dir()


def resolve_model(
    name_or_path: str, *, offline: bool | None = None, files: Literal["all", "tokenizer"] = "all"
) -> str:
    """An alias -> its converted folder; a local folder -> itself; a Hub id -> its cached snapshot.

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
    return download(name_or_path, offline=is_offline(offline), files=files)


def download(repo_id: str, *, offline: bool, files: Literal["all", "tokenizer"] = "all") -> str:
    """The snapshot folder of a Hub model, downloaded unless ``offline`` (then from the cache only)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        if files == "tokenizer":
            return str(
                snapshot_download(
                    repo_id, allow_patterns=TOKENIZER_FILES, ignore_patterns=SKIPPED, local_files_only=offline
                )
            )
        if offline:
            return _cached(repo_id)
        return str(snapshot_download(repo_id, ignore_patterns=SKIPPED + _redundant_weights(repo_id)))
    except HFValidationError:
        raise EngineError(
            f"{repo_id!r} is neither a local model folder nor a Hugging Face model id"
        ) from None
    except GatedRepoError:
        raise EngineError(
            f"model {repo_id!r} is gated: accept its terms on the Hub, then set HF_TOKEN or run "
            "`hf auth login`"
        ) from None
    except RepositoryNotFoundError:
        raise EngineError(
            f"no model {repo_id!r} on the Hub (a private one needs HF_TOKEN or `hf auth login`)"
        ) from None
    except LocalEntryNotFoundError:
        if offline:
            raise EngineError(
                f"model {repo_id!r} is not in the local Hugging Face cache and the machine is offline "
                "(HF_HUB_OFFLINE=1 or --offline); download it on a connected machine: hf download "
                f"{repo_id}"
            ) from None
        raise EngineError(
            f"cannot download model {repo_id!r}: the Hub is unreachable and the model is not in the local "
            "cache; check the network (or HF_ENDPOINT), or pass a local folder"
        ) from None
    except OSError as exc:
        raise EngineError(f"cannot download model {repo_id!r}: {exc}") from None


def _cached(repo_id: str) -> str:
    """The cached snapshot, offline. A download skipped the PyTorch weights of a repo that also has
    safetensors (``_redundant_weights``), so the snapshot is complete without them; a model with only
    PyTorch weights needs them."""
    from huggingface_hub import snapshot_download

    folder = snapshot_download(repo_id, ignore_patterns=SKIPPED + PYTORCH_WEIGHTS, local_files_only=True)
    if any(Path(folder).rglob("*.safetensors")):
        return str(folder)
    return str(snapshot_download(repo_id, ignore_patterns=SKIPPED, local_files_only=True))


def _redundant_weights(repo_id: str) -> list[str]:
    """PyTorch ``.bin`` weights are skipped when the repo also has safetensors (most do).

    The file list comes from the model's info (one request): ``list_repo_files`` retried an
    unreachable Hub five times with back-off, 23 s of warnings before the download said the same.
    """
    from huggingface_hub import HfApi

    try:
        names = [s.rfilename for s in HfApi().model_info(repo_id).siblings or []]
    except Exception:  # unreachable, unauthorised...: the download itself reports the problem
        return []
    return PYTORCH_WEIGHTS if any(n.endswith(".safetensors") for n in names) else []
