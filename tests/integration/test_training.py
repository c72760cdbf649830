"""``reflectory train`` on the tiny model: a model folder that transformers and the hf engine load, its
weights moved from the base, its loss lower after than before, a ``trainings`` row, and a rerun that
trains nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from storage.store import Store
from storage.trainings import read_training_data
from tests.cli import reflectory

pytestmark = pytest.mark.slow

PAIRS = [(f"Say the number {i}.", f"The number is {i}.") for i in range(6)]
CONVERSATION = [("system", "Be brief."), ("user", "Name a fruit."), ("assistant", "An apple."),
                ("user", "Another?"), ("assistant", "A pear.")]  # fmt: skip


def write_data(path: Path) -> Path:
    rows = [{"instruction": q, "output": a} for q, a in PAIRS]
    rows.append({"messages": [{"role": r, "content": c} for r, c in CONVERSATION]})
    bad = [("assistant", "Hello."), ("user", "Hi."), ("assistant", "Hi.")]  # not a conversation
    rows.append({"messages": [{"role": r, "content": c} for r, c in bad]})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def train(tmp: Path, model: Path, data: Path, out: Path, *extra: str) -> dict:
    result = reflectory("train", "-d", str(data), "--base", f"hf:{model}", "-o", str(out),
                        "-s", str(tmp / "store"), "--lr", "1e-2", "--json", *extra)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return {**json.loads(result.stdout), "stderr": result.stderr}


def test_train_writes_a_model_that_learned_and_records_it(tmp_path: Path, tiny_model_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from infra.engines.hf_engine import HFEngine, HFOptions
    from tasks.scoring.score import PairText, score_pairs

    data, out = write_data(tmp_path / "data.jsonl"), tmp_path / "tuned"
    got = train(tmp_path, tiny_model_path, data, out)
    assert got["examples"] == 7 and got["trained_now"] and got["loss_last"] < got["loss_first"]
    assert "1 rows not used (1 starts_with_assistant)" in got["stderr"]
    assert got["settings"]["method"] == "lora" and got["loss_curve"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path).state_dict()
    tuned = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert base.keys() == tuned.keys()  # LoRA merged: a plain model folder
    assert any(not torch.equal(base[k], tuned[k]) for k in base)
    engine = HFEngine(str(out), HFOptions(dtype="float32"))
    try:
        [score] = score_pairs([PairText(*PAIRS[0])], engine)
    finally:
        engine.close()
    assert score.score_error is None
    store = Store(str(tmp_path / "store"))
    [row] = store.table("trainings").to_pylist()
    assert (row["source_id"], row["examples"], row["dataset"]) == ("train", 7, str(data))
    assert json.loads(row["hyperparameters_json"])["learning_rate"] == 1e-2
    assert json.loads(row["loss_curve_json"]) == got["loss_curve"] and "trl" in json.loads(
        row["versions_json"]
    )
    # The same training again: found, not repeated, not recorded twice.
    again = train(tmp_path, tiny_model_path, data, out)
    assert not again["trained_now"] and "nothing was trained" in again["stderr"]
    assert again["loss_last"] == got["loss_last"] and store.table("trainings").num_rows == 1
    # Other settings into the same folder: refused, the model kept.
    refused = reflectory("train", "-d", str(data), "--base", f"hf:{tiny_model_path}", "-o", str(out),
                         "-s", str(tmp_path / "store"), "--seed", "3")  # fmt: skip
    assert refused.returncode == 2 and "holds another training" in refused.stderr


def test_an_export_folder_trains_on_its_train_split_only(tmp_path: Path, tiny_model_path: Path) -> None:
    folder = tmp_path / "export" / "data"
    folder.mkdir(parents=True)
    chats = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in PAIRS]
    pq.write_table(pa.table({"messages": chats[:4]}), folder / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({"messages": chats[4:]}), folder / "test-00000-of-00001.parquet")
    got = train(tmp_path, tiny_model_path, tmp_path / "export", tmp_path / "tuned", "--epochs", "1")
    assert got["examples"] == 4


def test_a_runs_kept_variants_are_its_training_data_each_after_its_history(tmp_path: Path) -> None:
    from tests.view_store import HISTORY, RUN, build

    store = build(tmp_path / "store")
    kept = store.sql("SELECT count(*) FROM selected WHERE run_id = ? AND kept", params=[RUN]).fetchall()[0][0]
    data = read_training_data(store=store, run_id=RUN)
    assert len(data.pairs) == kept > 0 and data.version is not None and f"#{RUN}" in data.dataset
    with_history = [p for p in data.pairs if p.history]
    assert [p.history for p in with_history] == [HISTORY]
    with pytest.raises(ValueError, match="kept no pairs"):
        read_training_data(store=store, run_id="no-such-run")


def test_a_runs_arms_are_its_kept_variants_and_the_same_seeds_originals(tmp_path: Path) -> None:
    from flows.evaluate import arm_data
    from flows.params import EvaluateParams
    from tests.view_store import RUN, build

    store = build(tmp_path / "store")
    reflected, originals = arm_data(EvaluateParams(source_run=RUN, store=str(tmp_path / "store")), store)
    assert len(reflected.pairs) == len(originals.pairs) > 0
    seeds = {r["instruction"]: r["output"] for r in store.table("seeds").to_pylist()}
    assert all(seeds[p.instruction] == p.output for p in originals.pairs)  # the seeds as they were


def test_the_trained_folder_loads_in_the_vllm_engine(tmp_path: Path, tiny_model_path: Path) -> None:
    pytest.importorskip("vllm")
    from infra.engines.vllm_engine import VLLMEngine, VLLMOptions
    from tasks.engine import ChatRequest, Sampling

    got = train(
        tmp_path, tiny_model_path, write_data(tmp_path / "data.jsonl"), tmp_path / "tuned", "--epochs", "1"
    )
    engine = VLLMEngine(got["path"], VLLMOptions())
    try:
        [reply] = engine.generate(
            [ChatRequest.user("Say the number 3.")], Sampling(max_tokens=4, temperature=0.0)
        )
    finally:
        engine.close()
    assert reply.error is None and reply.completion_tokens > 0


def test_a_base_without_a_chat_template_trains_in_the_alpaca_template(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny_model_path, base)
    (base / "chat_template.jinja").unlink()  # a base model: no chat template of its own
    got = train(tmp_path, base, write_data(tmp_path / "data.jsonl"), tmp_path / "tuned", "--epochs", "1")
    assert "has no chat template: its prompts use the alpaca template" in got["stderr"]
    assert got["settings"]["chat_template"] == "alpaca" and got["examples"] == 7
