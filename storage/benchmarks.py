"""Read benchmark prompt files for decontamination: one benchmark per file.

A folder of ``*.jsonl`` (one record per line) or ``*.json`` (a list of records) files; each
record's prompts are found by ``tasks.curate.benchmark_texts`` (``text``, ``prompt``,
``Instruction``, ``instruction`` + ``instances``, LIMA ``conversations``, ``messages``, ``turns``).
The benchmark is named after its file (``vicuna_test_set.jsonl`` -> ``vicuna``). A record with no
prompt is an error naming the file and line: a silently empty benchmark would pass everything.
"""

from __future__ import annotations

import json
from pathlib import Path

from tasks.curate.decontam import Benchmark, benchmark_texts

SUFFIXES = (".jsonl", ".json")


def benchmark_name(path: Path) -> str:
    stem = path.name.removesuffix(path.suffix)
    for tail in ("_test_set", "_testset", "_test", "-test"):
        stem = stem.removesuffix(tail)
    return stem


def read_records(path: str | Path) -> list[tuple[int, object]]:
    """(line, record) pairs of a ``.jsonl`` file (its line numbers) or a ``.json`` list (positions from 1)."""
    path = Path(path)
    records: list[tuple[int, object]]
    if path.suffix == ".jsonl":
        records = []
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((line_no, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_no}: not JSON ({exc.msg})") from None
    elif path.suffix == ".json":
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, list):
            raise ValueError(f"{path}: expected a JSON list of records")
        records = list(enumerate(doc, start=1))
    else:
        raise ValueError(f"{path}: expected a .jsonl or .json file")
    return records


def read_benchmark(path: str | Path) -> Benchmark:
    path = Path(path)
    records = read_records(path)
    items = []
    for line_no, record in records:
        texts = benchmark_texts(record) if isinstance(record, dict) else []
        if not texts:
            raise ValueError(
                f"{path}:{line_no}: no prompt found (looked for text, prompt, Instruction, instruction, "
                "question, conversations, messages, turns)"
            )
        items.append(tuple(texts))
    return Benchmark(benchmark_name(path), tuple(items))


def read_benchmarks(folder: str | Path) -> list[Benchmark]:
    """Every benchmark file in ``folder`` (sorted by name); an error when there is none."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"benchmark folder {root} does not exist")
    files = sorted(p for p in root.iterdir() if p.suffix in SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"no .jsonl or .json benchmark files in {root}")
    return [read_benchmark(p) for p in files]
