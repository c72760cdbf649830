"""Flow parameter files: JSON or YAML by suffix, and clear errors for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.config_files import read_config
from flows.params import TracesParams


def test_json_and_yaml_give_the_same_parameters(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text('{"input": "q.jsonl", "sampling": {"temperature": 0}, "shard_size": 8}')
    (tmp_path / "p.yaml").write_text("input: q.jsonl\nsampling:\n  temperature: 0\nshard_size: 8\n")
    a, b = read_config(tmp_path / "p.json"), read_config(tmp_path / "p.yaml")
    assert a == b
    assert TracesParams(**b).sampling.temperature == 0


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.json", "{input: x", "cannot parse the config file"),
        ("bad.yaml", "input: [x", "cannot parse the config file"),
        ("list.yaml", "- a\n- b\n", "must hold a mapping of parameters, not list"),
    ],
)
def test_bad_files_say_what_is_wrong(tmp_path: Path, name: str, text: str, message: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=message):
        read_config(tmp_path / name)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read the config file"):
        read_config(tmp_path / "nope.yaml")
