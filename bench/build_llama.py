"""Build a Llama-architecture model with random weights and a BPE tokenizer trained here, offline.

For benchmarks on a machine with no network and no model files: the GPU scoring benchmark
(``bench/gpu.sh``) needs a model of realistic size (``--size 1b``: TinyLlama-1.1B's shape, 32k
vocabulary, bfloat16), and its CPU smoke run a tiny one. The tokenizer is a byte-level BPE trained
on the bundled Alpaca sample, so the model's speed is real even though its predictions are not.

    python bench/build_llama.py --size 1b --out /tmp/llama-1b [--dtype bfloat16] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "alpaca_sample.json"

SIZES = {
    # TinyLlama-1.1B: 22 layers, hidden 2048, GQA with 4 KV heads, 32k vocabulary.
    "1b": {
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "num_hidden_layers": 22,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "vocab_size": 32000,
    },
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "vocab_size": 2000,
    },
}


def train_tokenizer(out: Path, vocab_size: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rows = json.loads(DATA.read_text())
    texts = [" ".join(r[k] for k in ("instruction", "input", "output")) for r in rows]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "</s>", "<pad>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    from tokenizers import processors

    # Llama-style: the tokenizer itself puts <s> in front of every text.
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    ).save_pretrained(out)


def build(size: str, out: Path, dtype: str = "bfloat16", device: str = "cpu") -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    shape = dict(SIZES[size])
    train_tokenizer(out, shape["vocab_size"])
    vocab = len(AutoTokenizer.from_pretrained(out))  # a small corpus may give fewer merges than asked
    shape["vocab_size"] = vocab
    config = LlamaConfig(
        **shape,
        max_position_embeddings=4096,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(out, safe_serialization=True)
    params = sum(p.numel() for p in model.parameters())
    (out / "reflectory-bench.json").write_text(json.dumps({"size": size, "params": params, "dtype": dtype}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="1b")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--device", default="cpu", help="where the random weights are made (cuda is faster)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    build(args.size, args.out, args.dtype, args.device)
    meta = json.loads((args.out / "reflectory-bench.json").read_text())
    print(
        f"built a {meta['params'] / 1e9:.2f}B-parameter Llama ({args.dtype}) "
        f"in {time.perf_counter() - t0:.1f} s"
    )


if __name__ == "__main__":
    main()
