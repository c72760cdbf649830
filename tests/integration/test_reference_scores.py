"""``reflectory score`` with a named template reproduces the reference scorer with SmolLM2's tokenizer.

The model is a tiny random Llama over SmolLM2's own tokenizer (``tests.smol_tokenizer_model``): the
check is the texts, their tokens and the masks, which the weights do not change. The real SmolLM2
against the reference, on the bundled Alpaca sample: ``python bench/score.py --methods
reference,reflectory`` (it prints the largest loss difference).

The reference method is recomputed here from its description, not from Reflectory's code: each
text is tokenised with the tokenizer's defaults (``tokenizer.encode``), the model runs once on it
with ``labels``, and the prefix is masked by the length of the prefix tokenised alone. A direct
text is the target alone with ``labels`` equal to its ids, so a tokenizer that adds no BOS leaves
its first token unscored. Where a token merges across the seam (``:|`` after ``ASSISTANT:``), the
prefix tokenised alone is not a prefix of the full text; there Reflectory keeps the character
offsets (the merged token is the target's), and this test checks that instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from flows.cli import app

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
N_EACH = 4  # pairs with an input and pairs without, the shortest of the bundled sample

REVERSED = (
    "Below is the response to an instruction, please guess the corresponding instruction for the "
    "given response.\n{}\nGenerate the instruction for the above response."
)
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions."
)
INTRO = "Below is an instruction that describes a task"
# The reference's prompt dictionaries: (no input, with input).
PROMPTS = {
    "vicuna": (
        SYSTEM + " USER: {instruction} ASSISTANT:",
        SYSTEM + " USER: {instruction}\nInput:\n{input} ASSISTANT:",
    ),
    "alpaca": (
        INTRO + ". Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Response:",
        INTRO + ", paired with an input that provides further context. Write a response that "
        "appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n"
        "### Response:",
    ),
    "wizardlm": ("{instruction}\n\n### Response:", "{instruction}\n{input}\n\n### Response:"),
}


def sample_pairs() -> list[dict[str, str]]:
    rows = json.loads((ROOT / "data" / "alpaca_sample.json").read_text())
    size = lambda r: sum(len(r[k]) for k in ("instruction", "input", "output"))  # noqa: E731
    with_input = sorted((r for r in rows if r["input"]), key=size)[:N_EACH]
    without = sorted((r for r in rows if not r["input"]), key=size)[:N_EACH]
    return with_input + without


class Reference:
    """The reference scorer's method, one text at a time."""

    def __init__(self, path: str) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        self.seams = 0

    @torch.no_grad()
    def loss(self, ids: list[int], n_masked: int) -> float:
        x = torch.tensor([ids])
        labels = x.clone()
        labels[0, :n_masked] = -100
        return float(self.model(x, labels=labels).loss)

    def direct(self, text: str) -> float:
        return self.loss(self.tok.encode(text), 0)

    def conditioned(self, prefix: str, target: str) -> float:
        ids = self.tok.encode(prefix + target)
        n_prefix = len(self.tok.encode(prefix))
        if ids[:n_prefix] != self.tok.encode(prefix):
            # A token merges across the seam: the reference would mask it away; the offsets rule
            # scores it as the target's first token, predicted from the token before it.
            self.seams += 1
            n_prefix -= 1
        return self.loss(ids, n_prefix)

    def pair(self, template: str, row: dict[str, str]) -> tuple[float, float, float, float]:
        no_input, with_input = PROMPTS[template]
        ins, inp, out = row["instruction"], row["input"], row["output"]
        prompt = (
            with_input.format_map({"instruction": ins, "input": inp})
            if inp
            else no_input.format_map({"instruction": ins})
        )
        reverse = no_input.format_map({"instruction": REVERSED.format(out)})
        return (
            self.conditioned(prompt, out),
            self.direct(out),
            self.conditioned(reverse, ins + inp),
            self.direct(ins + inp),
        )


@pytest.fixture(scope="module")
def smol_tokens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.smol_tokenizer_model import tiny_with_smollm2_tokenizer

    return tiny_with_smollm2_tokenizer(tmp_path_factory.mktemp("smol-tokens"))


@pytest.fixture(scope="module")
def reference(smol_tokens: Path) -> Reference:
    return Reference(str(smol_tokens))


@pytest.mark.parametrize("template", ["vicuna", "alpaca", "wizardlm"])
def test_named_templates_reproduce_the_reference_losses(template, reference, smol_tokens, tmp_path):
    rows = sample_pairs()
    src = tmp_path / "pairs.json"
    src.write_text(json.dumps(rows))
    out = tmp_path / "scores.parquet"
    result = CliRunner().invoke(
        app,
        [
            "score",
            "-i",
            str(src),
            "-o",
            str(out),
            "--student",
            f"hf:{smol_tokens}",
            "-O",
            f"chat_template={template}",
        ],
    )
    assert result.exit_code == 0, result.output
    scored = pq.read_table(out).to_pylist()
    assert len(scored) == len(rows)
    for row, s in zip(rows, scored, strict=True):
        assert s["score_error"] is None
        assert s["scoring_version"] == "scoring/v2"
        want = reference.pair(template, row)
        got = (s["loss_cond"], s["loss_direct"], s["rloss_cond"], s["rloss_direct"])
        assert got == pytest.approx(want, abs=1e-4), (template, row["instruction"])


def test_texts_longer_than_the_window_are_cut_as_the_reference_cuts_them(reference, smol_tokens, tmp_path):
    """The reference encodes with ``truncation=True, max_length=M``: a text keeps its first M tokens,
    the prompt is masked by its own untruncated length, so a long response loses its end and a
    prompt that fills the window leaves nothing to score (NaN; Reflectory says why, never 0)."""
    window = 48
    long_answer = "The mountain rivers carry stone and sand down to the sea. " * 6
    long_question = "Describe, in detail, how rivers shape the land around them. " * 6
    rows = [
        {"instruction": "Tell me about rivers.", "input": "", "output": long_answer},
        {"instruction": long_question, "input": "", "output": "They cut valleys."},
    ]
    src = tmp_path / "long.json"
    src.write_text(json.dumps(rows))
    out = tmp_path / "scores.parquet"
    args = ["score", "-i", str(src), "-o", str(out), "--student", f"hf:{smol_tokens}",
            "-O", "chat_template=wizardlm", "-O", f"max_length={window}"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    scored = pq.read_table(out).to_pylist()
    reference_cut = CutReference(reference, window)
    for row, s in zip(rows, scored, strict=True):
        want = reference_cut.pair("wizardlm", row)
        got = (s["loss_cond"], s["loss_direct"], s["rloss_cond"], s["rloss_direct"])
        assert got == pytest.approx(want, abs=1e-4, nan_ok=True), row["instruction"][:30]
    assert scored[1]["loss_cond"] != scored[1]["loss_cond"]  # the long prompt filled the window: NaN
    assert "target_truncated_away" in (scored[1]["score_error"] or "")


class CutReference(Reference):
    """The reference with its ``max_length``: every text cut to its first ``window`` tokens."""

    def __init__(self, base: Reference, window: int) -> None:  # shares the loaded model
        self.tok, self.model, self.seams, self.window = base.tok, base.model, 0, window

    @torch.no_grad()
    def loss(self, ids: list[int], n_masked: int) -> float:
        if n_masked >= min(len(ids), self.window):
            return float("nan")  # every label masked: the reference's loss is NaN
        return super().loss(ids[: self.window], n_masked)
