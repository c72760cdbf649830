"""A tiny model taught one reply: a real, deterministic teacher whose greedy output is known.

The random tiny Llama never writes a valid reflection trace, so flows run on it only exercise the
paths that drop rows. Teaching it (a few hundred AdamW steps on CPU, seconds) to answer the given
chat prompts with one fixed trace makes the keep path run too: valid structure, an output that is
right for some questions and wrong for others, and a student score.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path


def teach_reply(
    base: Path, out: Path, prompts: Sequence[str], reply: str, *, steps: int = 300, seed: int = 0
) -> Path:
    """Copy the model at ``base`` to ``out``, trained so that each rendered prompt continues with ``reply``.

    ``prompts`` are full chat texts ending with the assistant's generation prompt, as the engine
    renders them; the loss covers only the reply and the end-of-sequence token.
    """
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(base)
    model = LlamaForCausalLM.from_pretrained(base, dtype=torch.float32)
    torch.manual_seed(seed)
    target = tok(reply, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    rows = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    width = max(len(r) for r in rows) + len(target)
    ids = torch.full((len(rows), width), tok.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r) + len(target)
        ids[i, :n] = torch.tensor(r + target)
        labels[i, len(r) : n] = torch.tensor(target)
        mask[i, :n] = 1
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if loss.item() < 1e-3:
            break
    model.eval()
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
