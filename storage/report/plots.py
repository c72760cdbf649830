"""The report's plots as PNG images, drawn with matplotlib from ``storage.report.data``.

Why matplotlib: static PNGs go everywhere a run is looked at (a page opened from disk, the Hub's
dataset card, a Prefect artifact) with no browser, server or network to render them; the Agg
backend draws them headless on any machine. Each function takes the data the page embeds, so a
plot never shows a number the page does not.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

WIDTH_IN, HEIGHT_IN, DPI = 7.2, 4.0, 100  # 720 x 400 pixels
VARIANT_ORDER = ("ori", "Q", "A", "QA", "trace")
KEPT, DROPPED = "#2a7f62", "#c0504d"


def _figure(ncols: int = 1) -> tuple[Any, Any]:
    """A figure of its own, outside pyplot's global state: the viewer draws in several threads."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    axes = fig.subplots(1, ncols, squeeze=False)
    return fig, list(axes[0])


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _empty(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in this run", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def distributions(data: dict[str, Any]) -> bytes:
    """IFD and r-IFD of each variant as box plots with every point (values above 1 are not kept)."""
    rows = data.get("distributions", [])
    variants = [v for v in VARIANT_ORDER if any(r["variant"] == v for r in rows)]
    metrics = [m for m in ("ifd", "rifd") if any(r.get(m) is not None for r in rows)] or ["ifd"]
    fig, axes = _figure(len(metrics))
    for ax, metric in zip(axes, metrics, strict=True):
        series = [
            [r[metric] for r in rows if r["variant"] == v and r.get(metric) is not None] for v in variants
        ]
        if not any(series):
            _empty(ax, "scores")
            continue
        ax.boxplot(series, tick_labels=variants, showfliers=False)
        for i, values in enumerate(series, start=1):
            jitter = [i + ((k * 37) % 21 - 10) / 60 for k in range(len(values))]
            ax.scatter(jitter, values, s=8, alpha=0.5, color="#4472c4")
        ax.axhline(1.0, color=DROPPED, linestyle="--", linewidth=1, label="1 (kept below)")
        title = {"ifd": "IFD per variant", "rifd": "r-IFD per variant"}[metric]
        flat = [v for values in series for v in values if v > 0]
        if flat and max(flat) > 20 * min(flat):  # one outlier would flatten the rest: a log axis
            ax.set_yscale("log")
            title += " (log scale)"
        ax.set_title(title)
        ax.set_ylabel(metric.replace("rifd", "r-IFD").replace("ifd", "IFD"))
        ax.legend(loc="upper right", fontsize=8)
    return _png(fig)


def scatter(data: dict[str, Any]) -> bytes:
    """Reflected against original scores, with the decision tree's thresholds.

    Left: IFD(Q) against IFD(ori); above the diagonal the reflected branch is taken. Right: the
    candidate's r-IFD (QA or A) against its base's (Q or ori); a pair is kept below the diagonal
    and below r-IFD 1 (and with IFD below 1)."""
    rows = data.get("scatter", [])
    fig, (left, right) = _figure(2)
    if not rows:
        _empty(left, "scored pairs")
        _empty(right, "scored pairs")
        return _png(fig)
    colors = [KEPT if r["kept"] else DROPPED for r in rows]
    pts = [
        (r["ori_ifd"], r["q_ifd"], c)
        for r, c in zip(rows, colors, strict=True)
        if None not in (r["ori_ifd"], r["q_ifd"])
    ]
    _points(left, pts, "IFD(ori)", "IFD(Q)", "branch: Q above the line")
    cand = []
    for r, c in zip(rows, colors, strict=True):
        base, new = (
            (r["q_rifd"], r["qa_rifd"]) if r["branch"] == "reflected" else (r["ori_rifd"], r["a_rifd"])
        )
        if base is not None and new is not None:
            cand.append((base, new, c))
    _points(
        right,
        cand,
        "r-IFD of the base (ori or Q)",
        "r-IFD of the candidate (A or QA)",
        "kept below both lines",
    )
    right.axhline(1.0, color=DROPPED, linestyle="--", linewidth=1)
    right.scatter([], [], color=KEPT, s=12, label="kept")
    right.scatter([], [], color=DROPPED, s=12, label="dropped")
    right.legend(loc="upper left", fontsize=8)
    return _png(fig)


def _points(ax: Any, pts: list[tuple[float, float, str]], xlabel: str, ylabel: str, title: str) -> None:
    if not pts:
        _empty(ax, "pairs with both scores")
        return
    xs, ys, cs = zip(*pts, strict=True)
    ax.scatter(xs, ys, c=list(cs), s=14, alpha=0.8)
    lo, hi = min(min(xs), min(ys)), max(max(xs), max(ys))
    ax.plot([lo, hi], [lo, hi], color="#666666", linewidth=1)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(title, fontsize=10)


def reasons(data: dict[str, Any]) -> bytes:
    """Each selection (or trace) reason as a bar, kept ones in green."""
    rows = data.get("reasons", [])
    fig, (ax,) = _figure()
    if not rows:
        _empty(ax, "decisions")
        return _png(fig)
    labels = [str(r["reason"]) for r in rows]  # a row written without a reason shows as None
    ax.barh(labels, [r["n"] for r in rows], color=[KEPT if r["kept"] else DROPPED for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("pairs" if data["run"]["flow"] == "recycle" else "traces")
    ax.set_title("why pairs were kept or dropped" if data["run"]["flow"] == "recycle" else "trace outcomes")
    for i, r in enumerate(rows):
        ax.text(r["n"], i, f" {r['n']}", va="center", fontsize=8)
    return _png(fig)


def stages(data: dict[str, Any]) -> bytes:
    """Tokens, seconds and (where priced) cost per stage."""
    rows = data.get("stages", [])
    priced = [r for r in rows if r.get("cost") is not None]
    fig, axes = _figure(3 if priced else 2)
    names = [r["stage"] for r in rows]
    if not rows:
        for ax in axes:
            _empty(ax, "stages")
        return _png(fig)
    axes[0].bar(names, [r["prompt_tokens"] for r in rows], label="input")
    axes[0].bar(
        names,
        [r["completion_tokens"] for r in rows],
        bottom=[r["prompt_tokens"] for r in rows],
        label="output",
    )
    axes[0].set_title("tokens")
    axes[0].legend(fontsize=8)
    axes[1].bar(names, [r["task_seconds"] for r in rows], label="task wall")
    axes[1].bar(names, [r["device_hours"] * 3600 for r in rows], alpha=0.7, label="engine x devices")
    axes[1].set_title("seconds")
    axes[1].legend(fontsize=8)
    if priced:
        axes[2].bar([r["stage"] for r in priced], [r["cost"] for r in priced], color="#8064a2")
        axes[2].set_title(f"cost ({data['run']['cost']['currency']})")
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    return _png(fig)


def throughput(data: dict[str, Any]) -> bytes:
    """Rows of the final stage done against seconds since the run started, one point per shard."""
    rows = data.get("throughput", [])
    fig, (ax,) = _figure()
    if not rows:
        _empty(ax, "shards")
        return _png(fig)
    ax.step([0] + [r["finished_s"] for r in rows], [0] + [r["rows_done"] for r in rows], where="post")
    ax.scatter([r["finished_s"] for r in rows], [r["rows_done"] for r in rows], s=12,
               c=["#999999" if r.get("resumed") else "#4472c4" for r in rows])  # fmt: skip
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("rows done")
    ax.set_title("shard throughput (grey: resumed)")
    return _png(fig)


def funnel(data: dict[str, Any]) -> bytes:
    """Traces: replies, valid, verified and kept."""
    row = (data.get("funnel") or [{}])[0]
    steps = [k for k in ("replies", "valid", "verified", "kept") if k in row]
    fig, (ax,) = _figure()
    if not row.get("replies"):
        _empty(ax, "traces")
        return _png(fig)
    ax.bar(steps, [row[k] for k in steps], color=["#999999", "#4472c4", "#8064a2", KEPT][: len(steps)])
    for i, k in enumerate(steps):
        ax.text(i, row[k], str(row[k]), ha="center", va="bottom")
    ax.set_title("traces: valid, verified, kept")
    return _png(fig)


PlotFn = Callable[[dict[str, Any]], bytes]

PLOTS: dict[str, dict[str, PlotFn]] = {
    "recycle": {"distributions": distributions, "scatter": scatter, "reasons": reasons, "stages": stages,
                "throughput": throughput},
    "traces": {"funnel": funnel, "reasons": reasons, "distributions": distributions, "stages": stages,
               "throughput": throughput},
}  # fmt: skip
TITLES = {
    "distributions": "IFD and r-IFD by variant",
    "scatter": "Reflected against original scores",
    "reasons": "Selection reasons",
    "stages": "Tokens, seconds and cost per stage",
    "throughput": "Shard throughput",
    "funnel": "Valid, verified and kept traces",
    "judge": "The judge: reflected against original responses, and ratings of kept pairs",
    "comparison": "Wins, ties and losses per test set (the papers' pairwise evaluation)",
    "training": "Training loss of each arm (mean answer loss over its examples before and after)",
}


WIN, TIE, LOSS = "#2a7f62", "#b9b9b9", "#c0504d"


def verdicts(tallies: dict[str, dict[str, Any]], title: str, a: str = "A", b: str = "B") -> bytes:
    """The papers' figure: per test set (and in total), A's wins, ties and losses against B as
    stacked bars, with the winning score; failed items are left out and counted in the label."""
    fig, (ax,) = _figure()
    _verdict_bars(ax, tallies, a, b)
    ax.set_title(title, fontsize=10, pad=22)
    return _png(fig)


def comparison(data: dict[str, Any]) -> bytes:
    """A ``compare`` run's figure, from the run's own tallies (test sets in its order, then total)."""
    counts = data["run"]["counts"] or {}
    tallies = dict(counts.get("test_sets") or {})
    if len(tallies) > 1:
        tallies["total"] = counts["total"]
    title = f"{counts.get('a')} vs {counts.get('b')}, judged by {counts.get('judge')}"
    return verdicts(tallies, title if len(title) < 90 else title[:87] + "...")


def training(data: dict[str, Any]) -> bytes:
    """An evaluate run's arms: the training loss by step, and the loss over the arm's own examples
    measured before training (step 0) and after (the last step)."""
    fig, (ax,) = _figure()
    arms = data.get("training") or []
    if not arms:
        _empty(ax, "trainings")
        return _png(fig)
    for arm, color in zip(arms, (WIN, LOSS, KEPT, TIE), strict=False):
        curve = json.loads(arm["loss_curve_json"] or "[]")
        label = f"arm {str(arm['arm']).upper()} ({arm['examples']} examples)"
        ax.plot([p["step"] for p in curve], [p["loss"] for p in curve], color=color, label=label)
        last = curve[-1]["step"] if curve else 1
        ax.scatter([0, last], [arm["loss_first"], arm["loss_last"]], color=color, marker="o", zorder=3)
    ax.set_xlabel("optimizer step (dots: mean loss over the arm's examples before and after)")
    ax.set_ylabel("answer loss")
    ax.legend(fontsize=8, frameon=False)
    return _png(fig)


PLOTS["compare"] = {"comparison": comparison}
PLOTS["evaluate"] = {"comparison": comparison, "training": training}


def judge(data: dict[str, Any]) -> bytes:
    """The judge stage: the reflected response against the original, and the kept pairs' ratings."""
    numbers = data.get("judge") or {}
    fig, (left, right) = _figure(2)
    _verdict_bars(left, {"pairs": numbers} if numbers else {}, "reflected", "original")
    left.set_title("reflected vs original response", fontsize=9, pad=22)
    histogram = numbers.get("ratings") or {}
    if not any(histogram.values()):
        _empty(right, "ratings")
    else:
        right.bar([int(k) for k in histogram], list(histogram.values()), color=KEPT)
        right.set_xticks(range(1, 11))
        right.set_xlabel("rating of the kept variant (1-10)")
        right.set_ylabel("kept pairs")
        right.set_title(f"ratings (mean {numbers['mean_rating']:.2f})", fontsize=9)
    return _png(fig)


def _verdict_bars(ax: Any, tallies: dict[str, dict[str, Any]], a: str, b: str) -> None:
    names = list(tallies)
    if not names or not any(t["wins"] + t["ties"] + t["losses"] for t in tallies.values()):
        _empty(ax, "judged items")
        return
    left = [0] * len(names)
    for key, label, color in (
        ("wins", f"{a} wins", WIN),
        ("ties", "tie", TIE),
        ("losses", f"{b} wins", LOSS),
    ):
        values = [tallies[n][key] for n in names]
        ax.barh(names, values, left=left, color=color, label=label)
        for i, v in enumerate(values):
            if v:
                ax.text(left[i] + v / 2, i, str(v), ha="center", va="center", fontsize=8)
        left = [x + v for x, v in zip(left, values, strict=True)]
    for i, n in enumerate(names):
        t = tallies[n]
        score = "n/a" if t["winning_score"] is None else f"{t['winning_score']:.3f}"
        failed = f", {t['failed']} failed" if t["failed"] else ""
        ax.text(left[i], i, f"  {score}{failed}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(left) * 1.35)
    ax.set_xlabel("items (winning score at the end of each bar)")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)


def draw_all(data: dict[str, Any]) -> dict[str, bytes]:
    """Every plot of the run's flow, by name, as PNG bytes."""
    out = {name: fn(data) for name, fn in PLOTS[data["run"]["flow"]].items()}
    if data.get("judge"):
        out["judge"] = judge(data)
    return out
