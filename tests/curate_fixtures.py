"""A fixture table of real Alpaca rows with planted duplicates and benchmark overlaps.

Every planted row has a ``source_id`` that says what it is, so a test can check that a step
removed exactly the planted rows and nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# Benchmark fixture files: one per supported layout.
VICUNA_SHORT = "How can I improve my time management skills?"  # 8 words: matched as a phrase
KOALA_TINY = "Write a haiku about autumn."  # 5 words: matched only as a whole field
LIMA_LONG = (
    "I'm writing a paper about a new model architecture for processing long texts and "
    "want help writing the introduction section of it."
)
SINSTRUCT_INSTRUCTION = "Rewrite the sentence to make it clearer and more concise for a general reader."
SINSTRUCT_INPUT = "If you have any questions about my rate please let me know as soon as you possibly can."
WIZARD = "If a car travels 120 miles in 2 hours, what is its average speed in miles per hour?"


def write_benchmarks(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "vicuna_test_set.jsonl": [{"question_id": 1, "text": VICUNA_SHORT, "category": "generic"}],
        "koala_test_set.jsonl": [{"id": "koala_0", "prompt": KOALA_TINY}],
        "lima_test_set.jsonl": [{"conversations": LIMA_LONG}],
        "sinstruct_test_set.jsonl": [
            {
                "id": "user_oriented_task_0",
                "instruction": SINSTRUCT_INSTRUCTION,
                "instances": [{"input": SINSTRUCT_INPUT, "output": "..."}],
            }
        ],
        "wizardlm_test_set.jsonl": [{"idx": 1, "Skill": "Math", "Instruction": WIZARD}],
    }
    for name, records in files.items():
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def base_rows(n: int = 20, start: int = 0) -> list[dict[str, Any]]:
    rows = json.loads((ROOT / "data" / "alpaca_sample.json").read_text())[start : start + n]
    out = []
    for i, r in enumerate(rows, start=start):
        out.append(
            {
                "run_id": "run-1",
                "source_id": f"base-{i}",
                "instruction": r["instruction"],
                "input": r["input"],
                "output": r["output"],
                "variant": "A" if i % 2 else "QA",
                "ifd_ppl": 0.5 + i / 100,
                "rifd_ppl": 0.4 + i / 200,
                "kept": True,
                "teacher": "hf:teacher",
                "student": "hf:student",
                "prompt_version": "reflect_response/v1",
            }
        )
    return out


def _plant(row: dict[str, Any], source_id: str, **changes: Any) -> dict[str, Any]:
    return {**row, "source_id": source_id, **changes}


def planted_rows() -> list[dict[str, Any]]:
    """20 real rows plus planted rows whose ``source_id`` starts with what should remove them."""
    rows = base_rows()
    r3, r5 = rows[3], rows[5]
    # Each contamination plant is its own real row (20..25), so it duplicates nothing.
    x = base_rows(6, start=20)
    out_words = r5["output"].split()
    out_words[len(out_words) // 2] = "remarkably"  # one word changed in a 151-word answer
    rows += [
        # Same prompt up to case, punctuation and spacing; another answer: exact duplicate.
        _plant(r3, "exact-dup", instruction="  create a LIST of tips, for passive income ideas!! ",
               input="<No input>", output="A different answer."),
        # One word changed in the answer, a reworded prompt: near duplicate (Jaccard about 0.9).
        _plant(r5, "near-dup", instruction=r5["instruction"] + " Please.", output=" ".join(out_words)),
        # A 13-gram of a long LIMA prompt inside a longer instruction.
        _plant(x[0], "contam-lima", instruction="Please help: " + LIMA_LONG.split(" and ")[0] + " today."),
        # An 8-word Vicuna prompt as a phrase inside a longer instruction.
        _plant(x[1], "contam-vicuna", instruction="My boss asked me this. " + VICUNA_SHORT),
        # A Self-Instruct instance input in the input field.
        _plant(x[2], "contam-sinstruct", input=SINSTRUCT_INPUT),
        # The WizardLM question quoted in the answer.
        _plant(x[3], "contam-wizardlm", output="You asked: " + WIZARD + " It is 60 mph."),
        # A 5-word Koala prompt as the whole instruction (exact match).
        _plant(x[4], "contam-koala", instruction=KOALA_TINY, input=""),
        # The same 5-word prompt inside a longer instruction: not enough evidence, kept.
        _plant(x[5], "clean-koala-inside", instruction="Explain in detail how to " + KOALA_TINY.lower()),
    ]  # fmt: skip
    # Flags and scores for the filter steps.
    rows.append(_plant(rows[0], "not-kept", kept=False, instruction="Unrelated A: " + rows[0]["instruction"],
                       output="Alpha " * 3))  # fmt: skip
    rows.append(_plant(rows[1], "high-ifd", ifd_ppl=1.3, instruction="Unrelated B", output="Beta " * 3))
    rows.append(_plant(rows[2], "nan-ifd", ifd_ppl=float("nan"), instruction="Unrelated C", output="Gamma"))
    return rows


def ids(table: Any) -> list[str]:
    return table.column("source_id").to_pylist()
