"""The report's plots for a dataset card: PNG files in the exported repo, linked from the card.

The Hub renders images a card links by a path in its own repo, so the plots travel with the data
(``images/CONFIG/RUN_ID/NAME.png``) and the card stays readable offline; its text tables stay too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .data import ReportError, collect
from .plots import TITLES, draw_all

log = logging.getLogger(__name__)

MAX_RUNS = 3  # an export of many runs shows the plots of its latest three


@dataclass(frozen=True)
class CardImage:
    path: str  # in the dataset repo
    title: str
    png: bytes


def card_images(
    store: Any,
    run_ids: Sequence[str],
    config_name: str,
    run_rows: Mapping[str, dict[str, Any]] | None = None,
) -> list[CardImage]:
    """The plots of the exported rows' runs (the latest ``MAX_RUNS``), ready to write or push."""
    images: list[CardImage] = []
    for run_id in sorted(run_ids)[-MAX_RUNS:]:
        try:
            data = collect(store, run_id, (run_rows or {}).get(run_id))
        except ReportError as exc:  # rows without a finished run (e.g. written by hand): no plots
            log.warning("no plots for run %s on the card: %s", run_id, exc)
            continue
        suffix = f" (run {run_id})" if len(run_ids) > 1 else ""
        for name, png in draw_all(data).items():
            images.append(CardImage(f"images/{config_name}/{run_id}/{name}.png", TITLES[name] + suffix, png))
    return images
