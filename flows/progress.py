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


class StageBars:
    """A flow's bars: ``advance(stage_index)`` counts a shard done; ``note(text)`` shows a line under
    them (what the run waits on), or hides it with an empty text."""

    def __init__(self, progress: Progress, stages: Sequence[str], total: int, note: str = "") -> None:
        self._progress = progress
        self._bars = [progress.add_task(name, total=total) for name in stages]
        self._default = self._shown = note
        self._note = progress.add_task(note, total=None, visible=bool(note))

    def advance(self, i: int) -> None:
        self._progress.advance(self._bars[i], 1)

    def standing(self, text: str) -> None:
        """Change the standing note (what the flow holds), shown whenever nothing else is."""
        if self._shown == self._default:  # not covered by a passing note
            self._shown = text
            self._progress.update(self._note, description=text, visible=bool(text))
        self._default = text

    def note(self, text: str) -> None:
        """Show ``text`` under the bars (an empty one: the standing note, such as the shard window)."""
        text = self._shown = text or self._default
        self._progress.update(self._note, description=text, visible=bool(text))


@contextmanager
def stages_progress(stages: Sequence[str], total: int, note: str = "") -> Iterator[StageBars]:
    """One bar per stage of a flow, each counting shards done, and a line under them: ``note``, or
    what the run waits on."""
    with _progress(TextColumn("shards"), TimeElapsedColumn()) as progress:
        yield StageBars(progress, stages, total, note)
