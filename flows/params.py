"""Typed flow parameters: the CLI, Python callers and the Prefect UI's form all use these models.

A model role and sampling are one model each (``tasks.engine.ModelRole``, ``tasks.engine.Sampling``),
shared with the engine pools; the field descriptions are what the Prefect UI shows a user.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from storage.hub_export import ExportParams
from tasks.engine import ModelRole, Sampling
from tasks.teacher.forms import ReplyForm, form_note, instruction_form, response_form, trace_form
from tasks.training.settings import TrainSettings

DEFAULT_MODEL = "vllm:smollm2"
# Letters, digits and . _ : - (a run id names its shards in the store: storage.store.SAFE_ID).
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$"  # the hf engine runs it where vLLM is not installed


def _judge_sampling() -> Sampling:
    from tasks.judge.protocol import JUDGE_SAMPLING

    return JUDGE_SAMPLING


class JudgeParams(BaseModel):
    """A judge: its model, how it decodes (the reference's greedy 256 tokens), and its reply form."""

    model_config = ConfigDict(extra="forbid")

    model: ModelRole = Field(
        default_factory=lambda: ModelRole(spec=DEFAULT_MODEL),
        description="The judge model. The bundled 135M model gives noise: point this at a strong one, "
        "e.g. openai:gpt-4o@https://api.openai.com/v1 or vllm:Qwen/Qwen2.5-72B-Instruct.",
    )
    sampling: Sampling = Field(
        default_factory=_judge_sampling,
        description="How the judge decodes: the reference used temperature 0 and 256 new tokens.",
    )
    constrained: bool = Field(
        True,
        description="Constrain the reply's first line to the scores where the engine has grammars "
        "(hf, vllm, vllm serve); other servers get the reference prompt alone.",
    )

    @model_validator(mode="before")
    @classmethod
    def _spec_alone(cls, data: Any) -> Any:
        """``judge: openai:NAME@URL`` in a config file is the judge with its defaults."""
        return {"model": data} if isinstance(data, str) else data


class RunParams(BaseModel):
    """What every factory flow takes."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field(
        ...,
        description="The data: a JSONL, JSON, Parquet or CSV file, a folder of them, or a Hugging Face "
        "dataset id.",
    )
    store: str = Field("./factory", description="Where results go: a local folder or s3://bucket/prefix.")
    run_id: str | None = Field(
        None,
        pattern=RUN_ID_PATTERN,
        description="Name the run to resume it: a rerun with the same id computes only the missing shards.",
    )
    teacher: ModelRole = Field(
        default_factory=lambda: ModelRole(spec=DEFAULT_MODEL),
        description="The model that writes reflections.",
    )
    student: ModelRole = Field(
        default_factory=lambda: ModelRole(spec=DEFAULT_MODEL),
        description="The model that scores IFD and r-IFD.",
    )
    sampling: Sampling = Field(default_factory=Sampling, description="How the teacher samples its replies.")
    constrained: bool = Field(
        True,
        description="Constrain the teacher's replies to their form (JSON for reflections, the Reflection "
        "format for traces), each part bounded so a reply ends within max_tokens. Off: free text, parsed.",
    )
    shard_size: int = Field(64, ge=1, description="Pairs per shard: the unit of work, retry and commit.")
    limit: int | None = Field(None, ge=1, description="Use only the first N rows of the input.")
    ray_address: str | None = Field(
        None,
        description="Empty: the Ray head running on this machine (ray start --head), else a local Ray "
        "started for this run; 'local' for a Ray of this run's own; 'auto' or ray://host:10001 for a "
        "cluster.",
    )
    report: bool = Field(
        True, description="Write the run's report page (plots, config, lineage) at the end; see report_dir."
    )
    report_dir: str | None = Field(
        None, description="Folder of the report page. Default: reports/ in a local store, else ./reports."
    )
    offline: bool = Field(
        False,
        description="Never contact the Hugging Face Hub: models must be local folders or already cached.",
    )
    fresh_replies: bool = Field(
        False,
        description="Ask the models again instead of reusing replies stored by earlier runs to the same "
        "requests (same model, messages, sampling and seed, reply form).",
    )
    compact: bool = Field(
        True,
        description="At the end of the run, rewrite the small files of the tables it wrote into large ones "
        "and checkpoint their logs (a new version; earlier ones stay readable until a vacuum). Skipped, "
        "with a warning, while another run (or another process of this run id) writes to the store.",
    )
    export: ExportParams | None = Field(
        None,
        description="Last stage: curate this run's rows and push them to the Hub (or write a folder); "
        "the store and table are the run's own.",
    )

    def reply_forms(self) -> tuple[ReplyForm, ...]:
        """The forms the teacher's replies take in this flow (constrained or not)."""
        max_tokens = self.sampling.max_tokens
        return (instruction_form(max_tokens), response_form(max_tokens))

    def form_notes(self) -> list[str]:
        """A line per constrained form that ``max_tokens`` leaves no room for (its replies: free text)."""
        if not self.constrained:
            return []
        return [note for form in self.reply_forms() if (note := form_note(form))]


class RecycleParams(RunParams):
    """Selective Reflection-Tuning: reflect, score the four variants, select; optionally judge."""

    judge: JudgeParams | None = Field(
        None,
        description="Optional last stage: a judge compares each pair's reflected response with its "
        "original in both orders (the reference protocol) and rates each kept pair from 1 to 10. "
        "Off when empty.",
    )


class TracesParams(RunParams):
    """Reflection traces: generate, validate, verify against gold, score."""

    def reply_forms(self) -> tuple[ReplyForm, ...]:
        return (trace_form(self.sampling.max_tokens),)


class CompareParams(BaseModel):
    """The papers' pairwise evaluation of two models' answers on the test sets, by a judge."""

    model_config = ConfigDict(extra="forbid")

    answers_a: str | None = Field(None, description="JSONL of A's answers (question and output per row).")
    answers_b: str | None = Field(None, description="JSONL of B's answers, row by row with A's.")
    model_a: ModelRole | None = Field(
        None, description="Generate A's answers to the test sets with this model."
    )
    model_b: ModelRole | None = Field(
        None, description="Generate B's answers to the test sets with this model."
    )
    test_sets: list[str] = Field(
        default_factory=lambda: ["vicuna", "koala", "wizardlm", "sinstruct", "lima"],
        description="The test sets whose questions generated answers are for.",
    )
    test_sets_dir: str | None = Field(
        None, description="Folder of the test set files. Default: data/benchmarks of the checkout."
    )
    judge: JudgeParams = Field(default_factory=JudgeParams, description="The judge.")
    answer_sampling: Sampling = Field(
        default_factory=Sampling, description="How the models sample their answers to the test sets."
    )
    store: str = Field("./factory", description="Where results go: a local folder or s3://bucket/prefix.")
    run_id: str | None = Field(None, pattern=RUN_ID_PATTERN, description="Name the comparison to resume it.")
    shard_size: int = Field(64, ge=1, description="Questions per shard: the unit of work, retry and commit.")
    limit: int | None = Field(None, ge=1, description="Only the first N questions of each test set.")
    ray_address: str | None = Field(None, description="As for the factory flows.")
    offline: bool = Field(False, description="Never contact the Hugging Face Hub.")
    fresh_replies: bool = Field(
        False,
        description="Ask the models again instead of reusing replies stored by earlier runs to the same "
        "requests (same model, messages, sampling and seed, reply form).",
    )
    plot: str | None = Field(
        None, description="Where the plot goes. Default: comparison-RUN.png in the store."
    )

    @model_validator(mode="after")
    def _one_source_per_side(self) -> CompareParams:
        for side in ("a", "b"):
            answers, model = getattr(self, f"answers_{side}"), getattr(self, f"model_{side}")
            if (answers is None) == (model is None):
                raise ValueError(f"side {side.upper()}: give either --answers-{side} or --model-{side}")
        return self

    def roles(self) -> list[tuple[str, ModelRole]]:
        """Every model this comparison runs, by name."""
        named = [("model A", self.model_a), ("model B", self.model_b), ("judge", self.judge.model)]
        return [(name, role) for name, role in named if role is not None]

    def form_notes(self) -> list[str]:
        from tasks.judge.protocol import pair_form

        if self.judge.constrained and pair_form(self.judge.sampling, True) is None:
            return [
                f"max_tokens {self.judge.sampling.max_tokens} is too small for the judge's form: free text"
            ]
        return []


class EvaluateParams(BaseModel):
    """The papers' experiment: train a base on each of two datasets, then judge the two students."""

    model_config = ConfigDict(extra="forbid")

    base: str = Field(DEFAULT_MODEL, description="The model both arms fine-tune: hf:PATH_OR_ID.")
    source_run: str | None = Field(
        None,
        description="A recycle run: arm A is its kept variants, arm B the original pairs of the same seeds.",
    )
    train_a: str | None = Field(
        None, description="Arm A's dataset: a file or folder of pairs or conversations."
    )
    train_b: str | None = Field(None, description="Arm B's dataset.")
    training: TrainSettings = Field(default_factory=TrainSettings, description="How both arms train.")
    decontaminate: bool = Field(True, description="Remove training rows that overlap the test sets.")
    seed: int = Field(0, description="Seed of the sampling to equal size and of the training.")
    judge: JudgeParams = Field(default_factory=JudgeParams, description="The judge.")
    answer_sampling: Sampling = Field(
        default_factory=Sampling, description="How the trained models sample their answers to the test sets."
    )
    student_engine: Literal["hf", "vllm"] = Field(
        "hf", description="The engine the trained students answer on."
    )
    student_options: dict[str, Any] = Field(
        default_factory=dict, description="Engine options of both students."
    )
    student_cpus: float = Field(
        0.5,
        ge=0,
        description="Ray CPUs each student's replica reserves: two students and a judge fit 2 cores.",
    )
    student_gpus: float | None = Field(None, ge=0, description="GPUs each student's replica reserves.")
    test_sets: list[str] = Field(
        default_factory=lambda: ["vicuna", "koala", "wizardlm", "sinstruct", "lima"],
        description="The test sets the students answer.",
    )
    test_sets_dir: str | None = Field(
        None, description="Folder of the test set files. Default: data/benchmarks."
    )
    limit: int | None = Field(None, ge=1, description="Only the first N questions of each test set.")
    models_dir: str | None = Field(
        None, description="Where the trained models go. Default: models/RUN_ID in a local store."
    )
    store: str = Field("./factory", description="Where results go: a local folder or s3://bucket/prefix.")
    run_id: str | None = Field(None, pattern=RUN_ID_PATTERN, description="Name the run to resume it.")
    shard_size: int = Field(64, ge=1, description="Questions per shard of the answer and judge stages.")
    ray_address: str | None = Field(None, description="As for the factory flows.")
    offline: bool = Field(False, description="Never contact the Hugging Face Hub.")
    fresh_replies: bool = Field(False, description="Ask the judge again instead of reusing stored replies.")

    @model_validator(mode="after")
    def _one_pair_of_arms(self) -> EvaluateParams:
        files = (self.train_a is not None, self.train_b is not None)
        if self.source_run is None and files != (True, True):
            raise ValueError("give the arms: --run RUN_ID, or --train-a FILE and --train-b FILE")
        if self.source_run is not None and any(files):
            raise ValueError("give --run or --train-a/--train-b, not both")
        return self

    def student(self, folder: str) -> ModelRole:
        """A trained student as a model role: its folder on the students' engine."""
        return ModelRole(
            spec=f"{self.student_engine}:{folder}",
            options=self.student_options,
            num_cpus=self.student_cpus,
            num_gpus=self.student_gpus,
        )

    def compare_params(self, run_id: str, model_a: str, model_b: str) -> CompareParams:
        """The comparison of the two trained students (their folders), in this run."""
        return CompareParams(
            model_a=self.student(model_a),
            model_b=self.student(model_b),
            test_sets=self.test_sets,
            test_sets_dir=self.test_sets_dir,
            judge=self.judge,
            answer_sampling=self.answer_sampling,
            store=self.store,
            run_id=run_id,
            shard_size=self.shard_size,
            limit=self.limit,
            ray_address=self.ray_address,
            offline=self.offline,
            fresh_replies=self.fresh_replies,
        )
