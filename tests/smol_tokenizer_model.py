"""A tiny Llama that reads with SmolLM2's own tokenizer: the bundled model's texts, seams and special
tokens, at a fraction of its compute.

What the reference-scorer tests check is how texts are rendered, tokenised and masked (templates,
BOS handling, a token merging across the prompt/answer seam, the window's cut). The weights only have
to be the same for both sides, so random tiny ones check it as strictly as SmolLM2's 135M, and the
model loads and runs in a fraction of the time.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from infra.models.tiny import PARAMS

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
)  # fmt: skip


def tiny_with_smollm2_tokenizer(out: Path, seed: int = 0) -> Path:
    """The folder ``out``: SmolLM2's tokenizer files and a random tiny Llama over its vocabulary."""
    import torch
    from transformers import AutoConfig, GenerationConfig, LlamaConfig, LlamaForCausalLM

    from infra.models import resolve_model

    source = Path(resolve_model("smollm2"))
    smol = AutoConfig.from_pretrained(source)
    out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, out / name)
    config = LlamaConfig(
        **{**PARAMS, "vocab_size": smol.vocab_size},
        bos_token_id=smol.bos_token_id,
        eos_token_id=smol.eos_token_id,
        pad_token_id=getattr(smol, "pad_token_id", None),
        tie_word_embeddings=True,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).float()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2 if p.dim() > 1 else 0.02)  # as the tiny model: texts score apart
        for norm in (m for name, m in model.named_modules() if name.endswith("norm")):
            norm.weight.fill_(1.0)
    model.generation_config = GenerationConfig(bos_token_id=smol.bos_token_id, eos_token_id=smol.eos_token_id)
    model.save_pretrained(out, safe_serialization=True)
    return out
