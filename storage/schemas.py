"""Explicit Arrow schemas of the store's tables (docs/architecture.md).

Every row carries ``run_id`` and (except ``runs``) ``source_id``, plus the model, prompt-version
and stage columns that apply, so any question about lineage is one SQL query. Tables may gain
columns later (writes merge schemas); these are the columns every writer provides.
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

_PAIR = [("instruction", pa.string()), ("input", pa.string()), ("output", pa.string())]
_ACCOUNTING = [
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("latency_s", pa.float64()),
    ("finish_reason", pa.string()),
    ("reply_from", pa.string()),  # the run that asked for the reply, when this run reused it
]
_SCORES = [
    ("loss_cond", pa.float64()),
    ("loss_direct", pa.float64()),
    ("ifd_ppl", pa.float64()),
    ("ifd_loss", pa.float64()),
    ("rloss_cond", pa.float64()),
    ("rloss_direct", pa.float64()),
    ("rifd_ppl", pa.float64()),
    ("rifd_loss", pa.float64()),
    ("n_response_tokens", pa.int64()),
    ("n_instruction_tokens", pa.int64()),
    ("truncated", pa.bool_()),
    ("score_error", pa.string()),
    ("scoring_version", pa.string()),
]

# A teacher's reflection trace, validated and verified: what the traces flow commits before scoring.
_TRACE = [
    ("run_id", pa.string()),
    ("source_id", pa.string()),
    ("shard", pa.int64()),
    ("teacher", pa.string()),
    ("prompt_version", pa.string()),
    ("question", pa.string()),
    ("gold", pa.string()),
    ("raw_text", pa.string()),
    ("thinking", pa.string()),
    ("output", pa.string()),
    ("n_reflections", pa.int64()),
    ("valid", pa.bool_()),
    ("invalid_reason", pa.string()),
    ("verified", pa.bool_()),
    *_ACCOUNTING,
]

# A pairwise verdict by the reference protocol: A against B, both orders, A's outcome.
_VERDICT = [
    ("judge", pa.string()),
    ("judge_prompt_version", pa.string()),
    ("question", pa.string()),
    ("answer_a", pa.string()),
    ("answer_b", pa.string()),
    ("reply_a_first", pa.string()),
    ("reply_b_first", pa.string()),
    ("a_first_score_a", pa.float64()),
    ("a_first_score_b", pa.float64()),
    ("b_first_score_a", pa.float64()),
    ("b_first_score_b", pa.float64()),
    ("outcome", pa.string()),  # win | tie | loss | failed (A's)
    ("failure", pa.string()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("latency_s", pa.float64()),
    ("reply_from", pa.string()),  # the run that asked for the replies, when this run reused them all
]

SCHEMAS: dict[str, pa.Schema] = {
    "runs": pa.schema(
        [
            ("run_id", pa.string()),
            ("flow", pa.string()),
            ("status", pa.string()),
            ("started_at", TS),
            ("ended_at", TS),
            ("config_json", pa.string()),
            ("versions_json", pa.string()),
            ("counts_json", pa.string()),
            ("tokens_json", pa.string()),
            ("stage_seconds_json", pa.string()),
            ("cost_json", pa.string()),  # tasks.cost.cost_report: usage and cost per stage and run
            ("shards_json", pa.string()),  # the final stage's shards: rows, seconds, when they finished
            ("cause", pa.string()),  # why a run failed, was cancelled or stopped: one line
            ("host", pa.string()),  # where the run's driver ran
            ("pid", pa.int64()),  # its process there
        ]
    ),
    # Model replies by their content (tasks.replies): one teacher pass serves every student.
    "replies": pa.schema(
        [
            ("key", pa.string()),
            ("run_id", pa.string()),  # the run that asked for it
            ("model", pa.string()),
            ("text", pa.string()),
            ("finish_reason", pa.string()),
            ("prompt_tokens", pa.int64()),
            ("completion_tokens", pa.int64()),
            ("latency_s", pa.float64()),
            ("free", pa.bool_()),
            ("created_at", TS),
        ]
    ),
    # The Batch API's ledger (tasks.batches): a row per change of a batch's state, the latest wins.
    "batches": pa.schema(
        [
            ("key", pa.string()),
            ("run_id", pa.string()),
            ("state", pa.string()),
            ("requests", pa.int64()),
            ("attempt", pa.int64()),
            ("provider_id", pa.string()),
            ("input_file_id", pa.string()),
            ("output_file_id", pa.string()),
            ("error_file_id", pa.string()),
            ("counts_json", pa.string()),
            ("updated_at", TS),
        ]
    ),
    "seeds": pa.schema(
        [
            ("run_id", pa.string()),
            ("source_id", pa.string()),
            *_PAIR,  # a conversation's last exchange
            # Every message of the row, system prompt included: a single-turn pair as user + assistant.
            ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
            ("source", pa.string()),
            ("source_line", pa.int64()),
            ("ingested_at", TS),
        ]
    ),
    "rejects": pa.schema(
        [
            ("run_id", pa.string()),
            ("source", pa.string()),
            ("line", pa.int64()),
            ("reason", pa.string()),
            ("raw", pa.string()),
            ("ingested_at", TS),
        ]
    ),
    "reflections": pa.schema(
        [
            ("run_id", pa.string()),
            ("source_id", pa.string()),
            ("shard", pa.int64()),
            ("stage", pa.string()),  # instruction | response_original | response_reflected
            ("teacher", pa.string()),
            ("prompt_version", pa.string()),
            *_PAIR,
            ("raw_text", pa.string()),
            ("new_instruction", pa.string()),
            ("new_answer", pa.string()),
            ("better_answer", pa.string()),
            ("parse_status", pa.string()),
            *_ACCOUNTING,
            ("sampling_json", pa.string()),
        ]
    ),
    "scores": pa.schema(
        [
            ("run_id", pa.string()),
            ("source_id", pa.string()),
            ("shard", pa.int64()),
            ("variant", pa.string()),  # ori | Q | A | QA
            ("student", pa.string()),
            *_PAIR,
            *_SCORES,
        ]
    ),
    "selected": pa.schema(
        [
            ("run_id", pa.string()),
            ("source_id", pa.string()),
            ("shard", pa.int64()),
            ("kept", pa.bool_()),
            ("variant", pa.string()),
            ("branch", pa.string()),
            ("reason", pa.string()),
            *_PAIR,
            ("ifd_ppl", pa.float64()),
            ("rifd_ppl", pa.float64()),
            ("scoring_version", pa.string()),
            ("teacher", pa.string()),
            ("student", pa.string()),
            ("prompt_version", pa.string()),
        ]
    ),
    "trace_replies": pa.schema(_TRACE),
    "traces": pa.schema(
        [
            *_TRACE,
            ("student", pa.string()),
            ("ifd_ppl", pa.float64()),
            ("ifd_loss", pa.float64()),
            ("loss_cond", pa.float64()),
            ("loss_direct", pa.float64()),
            ("score_error", pa.string()),
            ("scoring_version", pa.string()),
            ("kept", pa.bool_()),
            ("reason", pa.string()),
        ]
    ),
    # ``reflectory compare``: each model's answers to the test sets (when generated), and the verdicts.
    "compare_answers": pa.schema(
        [
            ("run_id", pa.string()),
            ("source_id", pa.string()),  # test_set/index
            ("shard", pa.int64()),
            ("test_set", pa.string()),
            ("side", pa.string()),  # a | b
            ("model", pa.string()),
            ("question", pa.string()),
            ("answer", pa.string()),
            ("status", pa.string()),  # ok, or the request's failure (prompt_too_long: ...)
            *_ACCOUNTING,
            ("sampling_json", pa.string()),
        ]
    ),
    "comparisons": pa.schema(
        [
            ("run_id", pa.string()),
            ("source_id", pa.string()),
            ("shard", pa.int64()),
            ("test_set", pa.string()),
            ("source_a", pa.string()),  # where the answers came from: a file or a model spec
            ("source_b", pa.string()),
            *_VERDICT,
        ]
    ),
    # The recycle flow's optional judge: the reflected response (A) against the original one (B) to
    # the same instruction, and the kept variant's rating from 1 to 10.
    "judgements": pa.schema(
        [
            ("run_id", pa.string()),
            ("source_id", pa.string()),
            ("shard", pa.int64()),
            *_VERDICT,
            ("kept_variant", pa.string()),
            ("rating", pa.float64()),
            ("rating_reply", pa.string()),
            ("rating_failure", pa.string()),
            ("rating_prompt_version", pa.string()),
        ]
    ),
    # ``reflectory train`` and the evaluate flow's arms: one row per trained model.
    "trainings": pa.schema(
        [
            ("run_id", pa.string()),  # the evaluate run it belongs to, or the training's own id
            ("source_id", pa.string()),  # the arm (a, b) or "train"
            ("base", pa.string()),
            ("base_fingerprint", pa.string()),
            ("dataset", pa.string()),  # a file or folder, or store/selected@vN for a run's selection
            ("dataset_version", pa.int64()),  # the store version of a run's selection
            ("examples", pa.int64()),
            ("dropped", pa.int64()),  # examples the length cut left with no answer token
            ("tokens", pa.int64()),
            ("hyperparameters_json", pa.string()),
            ("loss_curve_json", pa.string()),
            ("loss_first", pa.float64()),
            ("loss_last", pa.float64()),
            ("seconds", pa.float64()),
            ("device", pa.string()),
            ("model_path", pa.string()),
            ("training_key", pa.string()),  # what it was trained from (tasks.training.examples)
            ("versions_json", pa.string()),
            ("created_at", TS),
        ]
    ),
}

# Tables written one shard at a time: each row names its shard (``run/stage/table/shard``), last.
SHARD_TABLES = (
    "reflections", "scores", "selected", "trace_replies", "traces", "compare_answers", "comparisons",
    "judgements",
)  # fmt: skip
for _name in SHARD_TABLES:
    SCHEMAS[_name] = SCHEMAS[_name].append(pa.field("shard_key", pa.string()))

TABLES = tuple(SCHEMAS)


def schema_of(name: str) -> pa.Schema:
    try:
        return SCHEMAS[name]
    except KeyError:
        raise ValueError(f"unknown table {name!r}; tables: {', '.join(TABLES)}") from None


def conform(name: str, rows: pa.Table | list[dict]) -> pa.Table:
    """Rows as a table with the declared columns first (in order, cast) and any extra ones after."""
    schema = schema_of(name)
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows)
    columns, fields = [], []
    for f in schema:
        col = (
            table.column(f.name).cast(f.type)
            if f.name in table.column_names
            else pa.nulls(len(table), f.type)
        )
        columns.append(col)
        fields.append(f)
    for f in table.schema:
        if f.name not in schema.names:
            columns.append(table.column(f.name))
            fields.append(f)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))
