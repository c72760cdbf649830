"""``reflectory run evaluate``: train a base on each arm, judge the two students (docs/evaluate.md)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from flows.cli.training_options import (
    DEFAULTS,
    BatchSize,
    ChatTemplate,
    Epochs,
    Full,
    LearningRate,
    MaxLength,
    MicroBatch,
)

console = Console()
err = Console(stderr=True)


def evaluate_command(
    base: Annotated[str, typer.Option(help="the model both arms fine-tune: hf:PATH_OR_ID")] = "hf:smollm2",
    run: Annotated[
        str | None, typer.Option("--run", help="a recycle run: its kept variants against their originals")
    ] = None,
    train_a: Annotated[str | None, typer.Option(help="arm A's dataset: a file or folder")] = None,
    train_b: Annotated[str | None, typer.Option(help="arm B's dataset: a file or folder")] = None,
    judge: Annotated[str | None, typer.Option(help="the judge's engine spec [default: vllm:smollm2]")] = None,
    judge_option: Annotated[
        list[str] | None, typer.Option("--judge-option", "-J", help="judge engine option KEY=VALUE")
    ] = None,
    judge_max_tokens: Annotated[
        int | None, typer.Option(help="tokens per judge reply [default: 256]")
    ] = None,
    free_text: Annotated[
        bool, typer.Option("--free-text/--constrained", help="judge replies unconstrained")
    ] = False,
    test_sets: Annotated[
        str | None, typer.Option(help="comma-separated [default: vicuna,koala,wizardlm,sinstruct,lima]")
    ] = None,
    test_sets_dir: Annotated[str | None, typer.Option(help="folder of the test set files")] = None,
    limit: Annotated[int | None, typer.Option(help="only the first N questions of each test set")] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="tokens per answer of a student [default: 512]")
    ] = None,
    full: Full = DEFAULTS.full,
    epochs: Epochs = DEFAULTS.epochs,
    learning_rate: LearningRate = DEFAULTS.learning_rate,
    batch_size: BatchSize = DEFAULTS.batch_size,
    micro_batch: MicroBatch = DEFAULTS.micro_batch,
    max_length: MaxLength = DEFAULTS.max_length,
    chat_template: ChatTemplate = DEFAULTS.chat_template,
    seed: Annotated[
        int, typer.Option(help="seed of the sampling to equal size and of the training")
    ] = DEFAULTS.seed,
    no_decontam: Annotated[
        bool, typer.Option("--no-decontam", help="keep rows overlapping the test sets")
    ] = False,
    models_dir: Annotated[
        str | None, typer.Option(help="where the students go [default: STORE/models]")
    ] = None,
    store: Annotated[str, typer.Option("--store", "-s")] = "./factory",
    run_id: Annotated[
        str | None, typer.Option(help="reuse to resume: nothing is trained or judged twice")
    ] = None,
    shard_size: Annotated[int, typer.Option(help="questions per shard")] = 64,
    ray_address: Annotated[str | None, typer.Option(help="as for reflectory run")] = None,
    offline: Annotated[bool, typer.Option("--offline/--online", help="never contact the Hub")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Train BASE on arm A and on arm B (equal N, decontaminated), then judge the students both ways."""
    from flows.cli.env import prefect_defaults

    prefect_defaults()
    from pydantic import ValidationError

    from flows.params import EvaluateParams
    from infra.engines.spec import parse_options
    from tasks.engine import EngineError
    from tasks.judge.protocol import JUDGE_SAMPLING

    try:
        judge_model: dict[str, Any] = {"spec": judge} if judge else {}
        if judge_option:
            judge_model = {"spec": judge or "vllm:smollm2", "options": parse_options(judge_option)}
        judge_cfg: dict[str, Any] = {"constrained": not free_text}
        if judge_model:
            judge_cfg["model"] = judge_model
        if judge_max_tokens is not None:
            judge_cfg["sampling"] = {**JUDGE_SAMPLING.model_dump(), "max_tokens": judge_max_tokens}
        params = EvaluateParams(
            base=base, source_run=run, train_a=train_a, train_b=train_b, judge=judge_cfg,
            training={"full": full, "epochs": epochs, "learning_rate": learning_rate,
                      "batch_size": batch_size, "micro_batch": micro_batch, "max_length": max_length,
                      "chat_template": chat_template},
            decontaminate=not no_decontam, seed=seed, limit=limit, test_sets_dir=test_sets_dir,
            models_dir=models_dir, store=store, run_id=run_id, shard_size=shard_size,
            ray_address=ray_address, offline=offline,
            **({"answer_sampling": {"max_tokens": max_tokens}} if max_tokens else {}),
            **({"test_sets": [s.strip() for s in test_sets.split(",") if s.strip()]} if test_sets else {}),
        )  # fmt: skip
    except (ValidationError, ValueError, EngineError) as exc:
        err.print(f"[red]bad parameters:[/] {exc}")
        raise typer.Exit(2) from exc
    from flows.cli.interrupts import cancellable

    summary = cancellable(lambda: run_evaluate(params))
    if as_json:
        print(json.dumps(json_summary(summary), default=str), flush=True)
        return
    _print(summary)


def run_evaluate(params: Any) -> dict[str, Any]:
    """Check, start the services and run the evaluate flow; a user's mistake is one line and exit 2."""
    from flows.cli.run import start_services
    from flows.evaluate import evaluate_flow
    from flows.prefect_api import PrefectAPIError
    from flows.preflight import check_roles, check_store_and_ray
    from flows.training import TrainingError, base_folder
    from infra.cluster import ClusterError
    from infra.pool import PoolError
    from storage.hub_export import ExportError
    from storage.store import StoreError
    from tasks.engine import EngineError

    try:
        base_folder(params.base)  # a missing base is one line now, before anything starts
        check_roles(
            [("judge", params.judge.model)], params.offline, note=lambda line: err.print(f"note: {line}")
        )
        check_store_and_ray(params.store, params.ray_address)
        start_services(params.ray_address, params.offline, [params.judge.model])
        return dict(evaluate_flow(params))
    except (
        TrainingError, EngineError, ClusterError, StoreError, PoolError, PrefectAPIError, FileNotFoundError,
        ValueError, ExportError,
    ) as exc:  # fmt: skip
        err.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc


def json_summary(summary: dict[str, Any]) -> dict[str, Any]:
    arm_keys = ("name", "model", "dataset", "examples", "dropped", "read", "contaminated", "sampled_out",
                "loss_first", "loss_last", "seconds", "trained_now")  # fmt: skip
    keys = ("run_id", "status", "base", "equal_n", "judge", "judge_prompt_version", "items", "test_sets",
            "total", "winning_score_ci", "plot")  # fmt: skip
    return {
        **{k: summary[k] for k in keys if k in summary},
        "arms": [{k: arm[k] for k in arm_keys if k in arm} for arm in summary.get("arms", [])],
    }


def _print(summary: dict[str, Any]) -> None:
    from flows.cli.compare import _print as print_verdicts

    arms = Table(title=f"evaluate run {summary['run_id']}: {summary.get('base')} trained on each arm")
    for column in ("arm", "dataset", "read", "test-set overlaps", "sampled out", "trained on", "loss before",
                   "loss after", "model"):  # fmt: skip
        arms.add_column(column, justify="left" if column in ("arm", "dataset", "model") else "right")
    for arm in summary.get("arms", []):
        arms.add_row(arm["name"].upper(), arm["dataset"], str(arm["read"]), str(arm["contaminated"]),
                     str(arm["sampled_out"]), str(arm["examples"]), f"{arm['loss_first']:.4f}",
                     f"{arm['loss_last']:.4f}", arm["model"])  # fmt: skip
    console.print(arms)
    print_verdicts(summary)
    if ci := summary.get("winning_score_ci"):
        console.print(f"winning score 95% interval (bootstrap over items): [{ci[0]:.3f}, {ci[1]:.3f}]")
