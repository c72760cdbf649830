"""Pairs/s of Reflectory's scoring against two baselines measured in the same run.

- reference: what tianyi-lab/Reflection_Tuning and Cherry_LLM do: one pair at a time, transformers,
  four forward passes per pair, each with ``labels=`` (full vocabulary projection at every position),
  the prefix masked by its length tokenised alone.
- minimal: one text at a time, the vocabulary projection only at the positions that predict a
  target token: the compute floor on a CPU.
- reflectory: ``score_pairs`` with the ``hf`` engine (what ``reflectory score`` runs).

The prompt texts are a reference format (``--template vicuna`` by default), so the three compute
the same losses; texts where a token merges across the prefix/target seam (where the reference's
boundary is off by one) are left out of the loss comparison and counted. The pairs are processed
in rounds and the order of the methods rotates every round, so a background load slows all of
them alike. Usage:
    python bench/score.py [--pairs 500] [--rounds 10] [--model smollm2] [--device cpu]
        [--template vicuna] [--methods reference,reflectory] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from infra.engines.hf_engine import HFEngine, HFOptions
from infra.models import resolve_model
from tasks.engine import ScoreRequest
from tasks.ingest.records import Pair, normalise
from tasks.scoring.score import PairText, pair_requests, score_pairs

DATA = Path(__file__).resolve().parents[1] / "data" / "alpaca_sample.json"

Losses = tuple[float, float, float, float]  # loss_cond, loss_direct, rloss_cond, rloss_direct


def load_pairs(n: int, data: Path = DATA) -> list[PairText]:
    """The first ``n`` pairs of the data file, cycling through it when it holds fewer."""
    records = json.loads(Path(data).read_text())
    pairs = [
        PairText(p.instruction, p.output, p.input)
        for line, rec in enumerate(records, 1)
        if isinstance(p := normalise(rec, line), Pair)
    ]
    return [pairs[i % len(pairs)] for i in range(n)]


def texts_of(pair: PairText, engine: HFEngine) -> list[tuple[str, str]]:
    reqs = pair_requests(pair, engine.prompt_format)
    return [(r.context, r.target) for r in reqs.all()]


class Reference:
    """The reference scripts' method: one text at a time, a full forward pass with ``labels=``, the
    prefix masked by its length tokenised alone (``tokenizer.encode`` with its defaults)."""

    def __init__(self, engine: HFEngine) -> None:
        self.engine = engine
        self.seams = 0  # conditioned texts where a token merges across the seam

    def ids(self, context: str, target: str) -> tuple[list[int], int]:
        encode = self.engine.tokenizer.tok.encode
        full = encode(context + target)
        if not context:
            return full, 0
        alone = encode(context)
        if full[: len(alone)] != alone:
            self.seams += 1
        return full, len(alone)

    @torch.inference_mode()
    def loss(self, context: str, target: str) -> float:
        full, n_masked = self.ids(context, target)
        ids = torch.tensor([full], device=self.engine.device)
        labels = ids.clone()
        labels[0, :n_masked] = -100
        return float(self.engine.model(input_ids=ids, labels=labels).loss)

    def score(self, pairs: Sequence[PairText]) -> list[Losses]:
        out = []
        for p in pairs:
            a, b, c, d = (self.loss(ctx, tgt) for ctx, tgt in texts_of(p, self.engine))
            out.append((a, b, c, d))
        return out


class Minimal(Reference):
    """One text at a time, the vocabulary projection only where a target token is predicted."""

    @torch.inference_mode()
    def loss(self, context: str, target: str) -> float:
        eng = self.engine
        plan = eng.tokenizer.plan(ScoreRequest(context, target))
        ids = torch.tensor([plan.input_ids], device=eng.device)
        hidden = eng.backbone(input_ids=ids, use_cache=False).last_hidden_state[0]
        logits = eng.lm_head(hidden[plan.first_target - 1 : -1]).float()
        targets = torch.tensor(plan.input_ids[plan.first_target :], device=eng.device)
        lp = logits.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(logits, -1)
        return float(-lp.mean())


def reflectory(engine: HFEngine, pairs: Sequence[PairText]) -> list[Losses]:
    return [(s.loss_cond, s.loss_direct, s.rloss_cond, s.rloss_direct) for s in score_pairs(pairs, engine)]


def seam_free(engine: HFEngine, pairs: Sequence[PairText]) -> list[list[bool]]:
    """Per pair and pass: whether the reference's prefix-alone boundary equals the offsets one."""
    probe = Reference(engine)
    out = []
    for p in pairs:
        flags = []
        for ctx, tgt in texts_of(p, engine):
            before = probe.seams
            probe.ids(ctx, tgt)
            flags.append(probe.seams == before)
        out.append(flags)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--model", default="smollm2", help="alias, local folder or Hub id")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument(
        "--template", default="vicuna", help="prompt format (a reference format reproduces the reference)"
    )
    ap.add_argument("--methods", default="reference,minimal,reflectory", help="comma-separated subset")
    ap.add_argument("--batch-tokens", type=int, default=None, help="hf engine: padded tokens per batch")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    pairs = load_pairs(args.pairs, Path(args.data))
    options = HFOptions(
        dtype=args.dtype, device=args.device, chat_template=args.template, batch_tokens=args.batch_tokens
    )
    engine = HFEngine(resolve_model(args.model), options)
    every: dict[str, Callable[[Sequence[PairText]], list[Losses]]] = {
        "reference": Reference(engine).score,
        "minimal": Minimal(engine).score,
        "reflectory": lambda ps: reflectory(engine, ps),
    }
    methods = {name: every[name] for name in args.methods.split(",")}
    seconds = dict.fromkeys(methods, 0.0)
    results: dict[str, list[Losses]] = {name: [] for name in methods}
    size = math.ceil(len(pairs) / args.rounds)
    names = list(methods)
    threads = torch.get_num_threads()
    print(
        f"{len(pairs)} pairs, model {args.model}, template {args.template}, device {engine.device}, "
        f"dtype {args.dtype}, torch threads {threads}"
    )
    for r, start in enumerate(range(0, len(pairs), size)):
        chunk = pairs[start : start + size]
        k = r % len(names)
        for name in names[k:] + names[:k]:
            t0 = time.perf_counter()
            results[name].extend(methods[name](chunk))
            if engine.device.type == "cuda":
                torch.cuda.synchronize()
            seconds[name] += time.perf_counter() - t0
        done = start + len(chunk)
        print(
            f"  round {r + 1}: {done} pairs; "
            + ", ".join(f"{k} {done / v:.2f}/s" for k, v in seconds.items())
        )
    rates = {name: len(pairs) / s for name, s in seconds.items()}
    report: dict[str, object] = {"pairs": len(pairs), "pairs_per_s": rates}
    print("\npairs/s:")
    for name, rate in rates.items():
        print(f"  {name:<11} {rate:8.2f}")
    for a, b in (("reflectory", "reference"), ("reflectory", "minimal"), ("minimal", "reference")):
        if a in rates and b in rates:
            print(f"{a} / {b} = {rates[a] / rates[b]:.2f}x")
            report[f"{a}/{b}"] = rates[a] / rates[b]
    same = seam_free(engine, pairs)
    n_seams = sum(not f for flags in same for f in flags)
    print(f"conditioned texts with a token merging across the seam (left out of the comparison): {n_seams}")
    for base in ("reference", "minimal"):
        if base == "reflectory" or base not in results or "reflectory" not in results:
            continue
        diff = max(
            abs(x - y)
            for ours, theirs, flags in zip(results["reflectory"], results[base], same, strict=True)
            for x, y, ok in zip(ours, theirs, flags, strict=True)
            if ok and not (math.isnan(x) and math.isnan(y))
        )
        print(f"largest loss difference vs {base}: {diff:.2e}")
        report[f"max_loss_diff_vs_{base}"] = diff
    report["seam_texts"] = n_seams
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
