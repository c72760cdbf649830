"""The ``evaluate`` flow: the papers' experiment in one resumable run (docs/evaluate.md).

Two arms, each a dataset: a recycle run's kept variants against the original pairs of the same seeds,
or any two files. Both are decontaminated against the test sets and brought to the same size
(seeded); a base model is fine-tuned on each with the same seed and settings; both students answer
the test sets with the same decoding; a judge compares them in both orders by the reference protocol.
A rerun with the same run id trains no arm twice (a finished model folder is found by what it was
trained from) and asks the judge nothing twice (the compare stages' shards are committed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.compare import CompareRun, judge_and_finish
from flows.params import EvaluateParams
from flows.training import base_folder, prompt_template, record, train_once
from storage.store import Store
from storage.test_sets import default_test_sets_dir, read_benchmarks
from storage.trainings import TrainingData, pair_after, read_training_data
from tasks.curate.config import DecontamConfig
from tasks.curate.decontam import NgramIndex
from tasks.ingest.records import Pair
from tasks.runs import new_run_id
from tasks.scoring.templates import MODEL_TEMPLATE
from tasks.training.arms import Arm, decontaminated, equal_size

ARMS = ("a", "b")


def models_dir(params: EvaluateParams, run_id: str, store: Store) -> Path:
    """Where the trained models go: ``models_dir``, else ``models/RUN_ID`` in a local store."""
    if params.models_dir:
        return Path(params.models_dir).expanduser() / run_id
    return (Path(store.uri) if store.is_local else Path("models")) / "models" / run_id


def arm_data(params: EvaluateParams, store: Store) -> tuple[TrainingData, TrainingData]:
    """Arm A's and arm B's datasets as given, before they are made comparable."""
    if params.source_run is None:
        return read_training_data(params.train_a), read_training_data(params.train_b)
    reflected = read_training_data(store=store, run_id=params.source_run)
    return reflected, _originals(store, params.source_run)


def _originals(store: Store, run_id: str) -> TrainingData:
    """The seeds of the pairs the run kept, as they were before recycling (same N, same ids)."""
    kept = store.sql("SELECT source_id FROM selected WHERE run_id = ? AND kept", params=[run_id]).fetchall()
    ids = [i for (i,) in kept]
    rows = store.sql(
        "SELECT source_id, instruction, input, output, messages FROM seeds WHERE list_contains(?, source_id)",
        params=[ids],
    ).fetchall()
    by_id = {r[0]: r for r in rows}
    pairs = [
        pair_after(by_id[i][4], by_id[i][1], by_id[i][2] or "", by_id[i][3], line)
        for line, i in enumerate(ids, 1)
        if i in by_id
    ]
    return TrainingData(pairs, f"{store.uri}/seeds#{run_id}", None)


def comparable_arms(
    params: EvaluateParams, data: tuple[TrainingData, TrainingData]
) -> tuple[Arm[Pair], Arm[Pair]]:
    """Both arms decontaminated against the test sets, then at equal size."""
    if params.decontaminate:
        folder = Path(params.test_sets_dir).expanduser() if params.test_sets_dir else default_test_sets_dir()
        config = DecontamConfig()
        index = NgramIndex.build(read_benchmarks(folder), config.ngram, config.min_words)

        def overlaps(text: str) -> bool:
            return bool(index.hits(text))
    else:

        def overlaps(text: str) -> bool:
            return False

    a, b = (decontaminated(name, d.pairs, overlaps) for name, d in zip(ARMS, data, strict=True))
    return equal_size(a, b, params.seed)


def train_arm(
    params: EvaluateParams, arm: Arm[Pair], data: TrainingData, output: str, run_id: str, store: Store
) -> dict[str, Any]:
    """One arm's student: trained now, or found trained by an earlier attempt of this run."""
    settings = params.training.model_copy(update={"seed": params.seed})
    model, fresh = train_once(
        params.base, TrainingData(arm.pairs, data.dataset, data.version), settings, output,
        note=get_run_logger().warning,
    )  # fmt: skip
    record(store, model, run_id=run_id, arm=arm.name, base=params.base, data=data)
    return {
        "name": arm.name,
        "model": model.path,
        "dataset": data.dataset,
        "read": arm.read,
        "contaminated": arm.contaminated,
        "sampled_out": arm.sampled_out,
        "examples": model.examples,
        "dropped": model.dropped,
        "loss_first": model.loss_first,
        "loss_last": model.loss_last,
        "loss_curve": model.loss_curve,
        "seconds": model.seconds,
        "trained_now": fresh,
    }


@flow(name="evaluate", persist_result=True, log_prints=True)
def evaluate_flow(params: EvaluateParams) -> dict[str, Any]:
    """Train BASE on each arm and judge the two students on the test sets; returns the verdicts and
    each arm's training."""
    logger = get_run_logger()
    run_id = params.run_id or new_run_id("evaluate")
    store = Store(params.store, create=True)
    template, note = prompt_template(base_folder(params.base), params.training.chat_template)
    if note:
        logger.warning(note)
    if template != MODEL_TEMPLATE:  # a named template (or a base without its own): answered as learned
        params = params.model_copy(
            update={
                "training": params.training.model_copy(update={"chat_template": template}),
                "student_options": {"chat_template": template, **params.student_options},
            }
        )
    folder = models_dir(params, run_id, store)
    compare = params.compare_params(run_id, str(folder / "a"), str(folder / "b"))
    with CompareRun(compare, flow="evaluate", config=params) as run:
        with run.stage("prepare"):
            data = arm_data(params, store)
            a, b = comparable_arms(params, data)
        for arm in (a, b):
            logger.info(
                "arm %s: %d pairs read, %d overlap the test sets, %d sampled out: %d to train on",
                arm.name, arm.read, arm.contaminated, arm.sampled_out, len(arm.pairs),
            )  # fmt: skip
        if not a.pairs:
            raise ValueError("an arm has no pairs left to train on after decontamination")
        with run.stage("train"):
            arms = [
                train_arm(params, arm, d, str(folder / arm.name), run.run_id, store)
                for arm, d in zip((a, b), data, strict=True)
            ]
        run.reset_versions()  # the trained models' fingerprints, now that they exist
        return judge_and_finish(
            run, compare, extra={"arms": arms, "base": params.base, "equal_n": len(a.pairs)}
        )
