"""Training speed: LoRA against full fine-tuning of the same model on the same Alpaca pairs, through
Reflectory's own training path (``infra.training``: trl's SFTTrainer). Prints training tokens/s of
each (tokens of the examples x epochs / seconds of the optimizer steps), the ratio, and both losses
before and after.

    OMP_WAIT_POLICY=PASSIVE python bench/train.py --model smollm2 --pairs 64          # CPU
    python bench/train.py --model /tmp/llama-1b --pairs 512 --micro-batch 16 --json out.json   # GPU
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from infra.engines.tokenizer import TextTokenizer
from infra.models import resolve_model
from infra.training import train
from tasks.ingest.records import make_pair
from tasks.training.examples import train_examples
from tasks.training.settings import TrainSettings

DATA = Path(__file__).resolve().parents[1] / "data" / "alpaca_sample.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2", help="a model folder or the bundled alias")
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--chat-template", default="model", help="model, or vicuna|alpaca|wizardlm|llama-3")
    ap.add_argument("--methods", default="lora,full")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    folder = resolve_model(args.model)
    rows = json.loads(DATA.read_text())[: args.pairs]
    pairs = [make_pair(r["instruction"], r.get("input", ""), r["output"], i) for i, r in enumerate(rows)]
    fmt = TextTokenizer.load(folder, args.chat_template, args.max_length).prompt_format
    examples = train_examples(pairs, fmt)
    out: dict[str, object] = {"model": folder, "pairs": len(pairs), "epochs": args.epochs}
    for method in args.methods.split(","):
        settings = TrainSettings(
            full=method == "full", epochs=args.epochs, batch_size=max(args.micro_batch, 32),
            micro_batch=args.micro_batch, max_length=args.max_length, chat_template=args.chat_template,
        )  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            done = train(folder, examples, settings, Path(tmp) / method)
        rate = done.tokens * args.epochs / done.train_seconds
        out[method] = {
            "tokens_per_s": rate, "train_seconds": done.train_seconds, "tokens": done.tokens,
            "steps": done.steps, "loss_first": done.loss_first, "loss_last": done.loss_last,
            "device": done.device,
        }  # fmt: skip
        print(f"{method}: {rate:,.0f} training tokens/s ({done.tokens:,} tokens x {args.epochs:g} epochs in "
              f"{done.train_seconds:.1f} s, {done.steps} steps on {done.device}); loss {done.loss_first:.3f} "
              f"-> {done.loss_last:.3f}", flush=True)  # fmt: skip
    if "lora" in out and "full" in out:
        ratio = out["lora"]["tokens_per_s"] / out["full"]["tokens_per_s"]  # type: ignore[index]
        out["lora/full"] = ratio
        print(f"result: LoRA trains at {ratio:.2f}x the tokens/s of full fine-tuning")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
