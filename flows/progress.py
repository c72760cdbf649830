"""One progress-bar style for every long step, on stderr so that stdout stays the command's output."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def _progress(*extra: ProgressColumn) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra,
        console=Console(stderr=True),
        transient=False,
    )


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; a non-terminal gets the final state once instead of animation."""
    with _progress(TimeElapsedColumn(), TimeRemainingColumn()) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


@contextmanager
def stages_progress(stages: Sequence[str], total: int) -> Iterator[Callable[[int], None]]:
    """One bar per stage of a flow, each counting shards done; yield ``advance(stage_index)``."""
    with _progress(TextColumn("shards"), TimeElapsedColumn()) as progress:
        bars = [progress.add_task(name, total=total) for name in stages]
        yield lambda i: progress.advance(bars[i], 1)
