"""Model fingerprints for run lineage: they change when the weights change, and never fail a run."""

from __future__ import annotations

from pathlib import Path

from infra.models.fingerprint import model_fingerprint


def folder(tmp_path: Path, weights: bytes) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "model.safetensors").write_bytes(weights)
    return tmp_path


def test_local_folder_digest_follows_config_and_weights(tmp_path: Path) -> None:
    a = model_fingerprint(f"hf:{folder(tmp_path / 'a', b'x' * 10)}")
    b = model_fingerprint(f"vllm:{folder(tmp_path / 'b', b'x' * 10)}")
    c = model_fingerprint(f"hf:{folder(tmp_path / 'c', b'x' * 11)}")
    assert a["sha256"] == b["sha256"] != c["sha256"]
    assert a["path"] == str(tmp_path / "a")


def test_endpoint_and_unknown_models_do_not_raise(tmp_path: Path) -> None:
    assert model_fingerprint("openai:gpt-4o-mini@https://api.example.com/v1") == {
        "spec": "openai:gpt-4o-mini@https://api.example.com/v1",
        "model": "gpt-4o-mini",
        "served_by": "https://api.example.com/v1",
    }
    missing = model_fingerprint(f"hf:{tmp_path / 'nope'}")
    assert "does not exist" in missing["error"]
    hub = model_fingerprint("hf:some-org/not-cached-model")
    assert hub["hub_id"] == "some-org/not-cached-model" and hub["revision"] == "unknown"
