"""How many conditioned texts of a data file have a token merging across the prefix/target seam.

There the reference scorer (which tokenises the prefix alone to find where the target starts)
and Reflectory (which takes the target's tokens from character offsets of the full text) put the
boundary one token apart, so their conditioned losses differ; everywhere else they agree. Only the
tokenizer is loaded: this runs in seconds.

    python bench/seams.py [--data data/alpaca_sample.json] [--model smollm2] [--template vicuna ...]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from infra.engines import load_tokenizer
from tasks.ingest.records import Pair, normalise
from tasks.scoring.score import PairText, pair_requests

DATA = Path(__file__).resolve().parents[1] / "data" / "alpaca_sample.json"


def merges_across_seam(tok: object, prefix: str, target: str) -> bool:
    """The prefix tokenised alone is not a prefix of the full text's tokens."""
    encode = tok.tok  # type: ignore[attr-defined]
    alone = encode(prefix, add_special_tokens=False)["input_ids"]
    full = encode(prefix + target, add_special_tokens=False)["input_ids"]
    return bool(full[: len(alone)] != alone)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--template", nargs="+", default=["vicuna", "alpaca", "wizardlm", "model"])
    args = ap.parse_args()
    records = json.loads(Path(args.data).read_text())
    pairs = [
        PairText(p.instruction, p.output, p.input)
        for line, r in enumerate(records, 1)
        if isinstance(p := normalise(r, line), Pair)
    ]
    print(f"{len(pairs)} pairs of {args.data}, {2 * len(pairs)} conditioned texts, tokenizer of {args.model}")
    print("| template | IFD texts | r-IFD texts | pairs affected | first target characters |")
    print("| --- | ---: | ---: | ---: | --- |")
    for template in args.template:
        tok = load_tokenizer(f"hf:{args.model}", {"chat_template": template})
        ifd = rifd = 0
        affected = 0
        starts: Counter[str] = Counter()
        for p in pairs:
            reqs = pair_requests(p, tok.prompt_format)
            a = merges_across_seam(tok, reqs.cond_response.context, reqs.cond_response.target)
            b = merges_across_seam(tok, reqs.cond_instruction.context, reqs.cond_instruction.target)
            ifd += a
            rifd += b
            affected += a or b
            for hit, req in ((a, reqs.cond_response), (b, reqs.cond_instruction)):
                if hit:
                    starts[repr(req.target[:1])] += 1
        shown = ", ".join(f"{k} {v}" for k, v in starts.most_common(5)) or "-"
        print(f"| {template} | {ifd} | {rifd} | {affected} of {len(pairs)} | {shown} |")


if __name__ == "__main__":
    main()
