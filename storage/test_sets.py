"""Read the evaluation test sets and answer files from disk (the pure reading is ``tasks.judge.test_sets``).

The five test sets of the papers ship in ``data/benchmarks`` of a checkout; ``--test-sets-dir`` points
elsewhere (an installed package, or other test sets with the same keys).
"""

from __future__ import annotations

from pathlib import Path

from tasks.judge.test_sets import Answer, Question, TestSetError, answers_of, test_set_questions

from .benchmarks import benchmark_name, read_records

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
    return {benchmark_name(p): p for p in sorted(root.iterdir()) if p.suffix in (".jsonl", ".json")}


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
