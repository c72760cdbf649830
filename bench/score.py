"""Pairs/s of Reflectory's scoring against two baselines measured in the same run.

- reference: what tianyi-lab/Reflection_Tuning and Cherry_LLM do: one pair at a time, transformers,
  four forward passes per pair, each with ``labels=`` (full vocabulary projection at every position).
- minimal: one text at a time, the vocabulary projection only at the positions that predict a
  target token: the compute floor on a CPU.
- reflectory: ``score_pairs`` with the ``hf`` engine (what ``reflectory score`` runs).

The pairs are processed in rounds and the order of the three methods rotates every round, so a
background load slows all of them alike. Usage:
    python bench/score.py [--pairs 500] [--rounds 10] [--model smollm2] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from infra.engines.base import ScoreRequest
from infra.engines.hf_engine import HFEngine, HFOptions
from infra.models import resolve_model
from tasks.ingest.records import Pair, normalise
from tasks.scoring.ifd import reverse_prompt
from tasks.scoring.score import PairText, score_pairs

DATA = Path(__file__).resolve().parents[1] / "data" / "alpaca_sample.json"

Losses = tuple[float, float, float, float]  # loss_cond, loss_direct, rloss_cond, rloss_direct


def load_pairs(n: int) -> list[PairText]:
    records = json.loads(DATA.read_text())
    pairs = []
    for line, rec in enumerate(records, 1):
        p = normalise(rec, line)
        if isinstance(p, Pair):
            pairs.append(PairText(p.user_message, p.output))
        if len(pairs) == n:
            break
    return pairs


def texts_of(pair: PairText, prefix: Callable[[str], str]) -> list[tuple[str, str]]:
    return [
        (prefix(pair.instruction), pair.response),
        ("", pair.response),
        (prefix(reverse_prompt(pair.response)), pair.instruction),
        ("", pair.instruction),
    ]


class Reference:
    """The reference scripts' method: full forward with labels, one text at a time."""

    def __init__(self, engine: HFEngine) -> None:
        self.engine = engine

    @torch.inference_mode()
    def loss(self, context: str, target: str) -> float:
        tok = self.engine.tokenizer
        # Same token boundary as Reflectory (offsets), so only the method's cost differs.
        plan = tok.plan(ScoreRequest(context, target))
        ids = torch.tensor([plan.input_ids])
        labels = ids.clone()
        labels[0, : plan.first_target] = -100
        return float(self.engine.model(input_ids=ids, labels=labels).loss)

    def score(self, pairs: Sequence[PairText]) -> list[Losses]:
        out = []
        for p in pairs:
            a, b, c, d = (self.loss(ctx, tgt) for ctx, tgt in texts_of(p, self.engine.chat_prefix))
            out.append((a, b, c, d))
        return out


class Minimal(Reference):
    """One text at a time, the vocabulary projection only where a target token is predicted."""

    @torch.inference_mode()
    def loss(self, context: str, target: str) -> float:
        eng = self.engine
        plan = eng.tokenizer.plan(ScoreRequest(context, target))
        hidden = eng.backbone(input_ids=torch.tensor([plan.input_ids]), use_cache=False).last_hidden_state[0]
        logits = eng.lm_head(hidden[plan.first_target - 1 : -1]).float()
        targets = torch.tensor(plan.input_ids[plan.first_target :])
        lp = logits.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(logits, -1)
        return float(-lp.mean())


def reflectory(engine: HFEngine, pairs: Sequence[PairText]) -> list[Losses]:
    return [(s.loss_cond, s.loss_direct, s.rloss_cond, s.rloss_direct) for s in score_pairs(pairs, engine)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()

    pairs = load_pairs(args.pairs)
    engine = HFEngine(resolve_model(args.model), HFOptions(dtype=args.dtype, device=args.device))
    methods: dict[str, Callable[[Sequence[PairText]], list[Losses]]] = {
        "reference": Reference(engine).score,
        "minimal": Minimal(engine).score,
        "reflectory": lambda ps: reflectory(engine, ps),
    }
    seconds = dict.fromkeys(methods, 0.0)
    results: dict[str, list[Losses]] = {name: [] for name in methods}
    size = math.ceil(len(pairs) / args.rounds)
    names = list(methods)
    threads = torch.get_num_threads()
    print(f"{len(pairs)} pairs, model {args.model}, device {engine.device}, torch threads {threads}")
    for r, start in enumerate(range(0, len(pairs), size)):
        chunk = pairs[start : start + size]
        for name in names[r % 3 :] + names[: r % 3]:
            t0 = time.perf_counter()
            results[name].extend(methods[name](chunk))
            seconds[name] += time.perf_counter() - t0
        done = start + len(chunk)
        print(
            f"  round {r + 1}: {done} pairs; "
            + ", ".join(f"{k} {done / v:.2f}/s" for k, v in seconds.items())
        )
    rates = {name: len(pairs) / s for name, s in seconds.items()}
    print("\npairs/s:")
    for name, rate in rates.items():
        print(f"  {name:<11} {rate:8.2f}")
    print(f"reflectory / reference = {rates['reflectory'] / rates['reference']:.2f}x")
    print(f"reflectory / minimal   = {rates['reflectory'] / rates['minimal']:.2f}x")
    print(f"minimal / reference    = {rates['minimal'] / rates['reference']:.2f}x")
    for base in ("reference", "minimal"):
        diff = max(
            abs(a - b)
            for ours, theirs in zip(results["reflectory"], results[base], strict=True)
            for a, b in zip(ours, theirs, strict=True)
        )
        print(f"largest loss difference vs {base}: {diff:.2e}")


if __name__ == "__main__":
    main()
