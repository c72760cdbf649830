"""``reflectory run``: a user's mistake is one clear line and exit code 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli import reflectory

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("flow", "args", "message"),
    [
        ("recycle", ["--teacher", "hf:/no/such/model"], "model path '/no/such/model' does not exist"),
        ("traces", ["--student", "vllm:./missing-model"], "model path './missing-model' does not exist"),
        ("recycle", ["--store", "/proc/no-store-here"], "cannot create the store at /proc/no-store-here"),
        ("recycle", ["--ray-address", "ray://127.0.0.1:1"], "could not reach Ray at ray://127.0.0.1:1"),
        ("traces", ["--input", "missing.jsonl"], "input 'missing.jsonl' does not exist"),
        ("recycle", ["--teacher", "gpt-4o"], "bad engine spec 'gpt-4o'"),
        ("recycle", ["--shard-size", "0"], "bad parameters"),
        (
            "traces",
            ["--teacher-option", "dtpye=float32"],
            "bad options for vllm:smollm2: dtpye: Extra inputs",
        ),
    ],
)
def test_mistakes_are_one_line(tmp_path: Path, flow: str, args: list[str], message: str) -> None:
    base = {"--input": str(ROOT / "data" / "demo_sample.jsonl"), "--store": str(tmp_path / "factory")}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    out = reflectory("run", flow, *[x for kv in base.items() for x in kv], cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr.replace("\n", " ")
    assert "Traceback" not in out.stdout + out.stderr
    assert not (tmp_path / "factory").exists()  # a failed check leaves no store behind


def test_a_push_without_a_token_stops_before_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("export:\n  repo: me/recycled\n")
    args = ["run", "recycle", "--config", str(config), "--input", str(ROOT / "data" / "demo_sample.jsonl"),
            "--store", str(tmp_path / "factory")]  # fmt: skip
    monkeypatch.delenv("HF_TOKEN", raising=False)
    out = reflectory(*args, cwd=tmp_path, env={"HF_HOME": str(tmp_path / "hf")})
    assert out.returncode == 2 and "no Hugging Face token" in out.stderr.replace("\n", " ")
    assert "Traceback" not in out.stdout + out.stderr
