"""Read benchmark files from disk: the evaluation test sets and answer files (the pure reading is
``tasks.judge.test_sets``), and the benchmarks decontamination checks against (``tasks.curate.decontam``).

The five test sets of the papers ship in ``data/benchmarks`` of a checkout; ``--test-sets-dir`` points
elsewhere (an installed package, or other test sets with the same keys). A folder of ``*.jsonl`` (one
record per line) or ``*.json`` (a list of records) files, one benchmark per file, named after it
(``vicuna_test_set.jsonl`` -> ``vicuna``). Rows are read by ``storage.sources.read_records``, the one
reader of record files; here a row that cannot be read is an error naming the file and line: a
silently shorter benchmark would pass everything.
"""

from __future__ import annotations

from pathlib import Path

from tasks.benchmark_records import LOOKED_FOR
from tasks.curate.decontam import Benchmark, benchmark_texts
from tasks.ingest.records import Question
from tasks.judge.test_sets import Answer, TestSetError, answers_of, test_set_questions

from .sources import read_records as read_rows

SUFFIXES = (".jsonl", ".json")

BUNDLED = Path(__file__).resolve().parents[1] / "data" / "benchmarks"


def default_test_sets_dir() -> Path:
    """``data/benchmarks`` here when it exists, else the checkout's."""
    here = Path("data/benchmarks")
    return here if here.is_dir() else BUNDLED


def test_set_files(folder: str | Path) -> dict[str, Path]:
    """Each test set in ``folder`` by name (``vicuna_test_set.jsonl`` -> ``vicuna``)."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"test set folder {root} does not exist (give --test-sets-dir)")
    return {benchmark_name(p): p for p in sorted(root.iterdir()) if p.suffix in SUFFIXES}


def read_test_sets(names: list[str], folder: str | Path, limit: int | None = None) -> list[Question]:
    """The questions of the named test sets, in that order; the first ``limit`` of each."""
    files = test_set_files(folder)
    missing = [n for n in names if n not in files]
    if missing:
        raise TestSetError(
            f"no test set {', '.join(missing)} in {folder} (there: {', '.join(files) or 'none'})"
        )
    out: list[Question] = []
    for name in names:
        questions = test_set_questions(name, read_records(files[name]), str(files[name]))
        out.extend(questions[:limit] if limit else questions)
    return out


def read_answers(path: str | Path) -> list[Answer]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"answer file {path} does not exist")
    return answers_of(read_records(path), str(path))


def benchmark_name(path: Path) -> str:
    stem = path.name.removesuffix(path.suffix)
    for tail in ("_test_set", "_testset", "_test", "-test"):
        stem = stem.removesuffix(tail)
    return stem


def read_records(path: str | Path) -> list[tuple[int, object]]:
    """(line, record) pairs of a ``.jsonl`` file (its line numbers) or a ``.json`` list (positions from
    1); a row that cannot be read is an error naming the file and line."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ValueError(f"{path}: expected a .jsonl or .json file")
    out: list[tuple[int, object]] = []
    for line, record, error, _ in read_rows(str(path)):
        if error is not None:
            raise ValueError(f"{path}:{line}: not JSON ({error})")
        out.append((line, record))
    return out


def read_benchmark(path: str | Path) -> Benchmark:
    path = Path(path)
    items = []
    for line_no, record in read_records(path):
        texts = benchmark_texts(record) if isinstance(record, dict) else []
        if not texts:
            raise ValueError(f"{path}:{line_no}: no prompt found (looked for {LOOKED_FOR})")
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
