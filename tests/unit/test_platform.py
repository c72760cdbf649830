"""Platform-aware engine settings: CPU-only vLLM settings on a CPU build only; GPU keeps vLLM's own."""

from __future__ import annotations

import os

import pytest

import infra.platform as platform
from infra.engines.options import VLLMOptions
from infra.engines.vllm_engine import llm_arguments
from infra.placement import plan_placement
from tasks.engine import ModelRole


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in platform.VLLM_CPU_ENV:
        monkeypatch.delenv(key, raising=False)


def test_the_cpu_build_gets_the_cpu_settings_and_a_user_value_stays(clean_env: None, monkeypatch) -> None:
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "8")
    applied = platform.apply_vllm_env("cpu")
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and os.environ["TORCH_COMPILE_DISABLE"] == "1"
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "8" and "VLLM_CPU_KVCACHE_SPACE" not in applied
    assert "HF_HUB_OFFLINE" not in applied  # offline is never forced


def test_a_gpu_build_gets_none_of_them(clean_env: None) -> None:
    assert platform.apply_vllm_env("gpu") == {}
    assert not any(key in os.environ for key in platform.VLLM_CPU_ENV)


def test_the_build_is_read_from_the_installed_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    def installed(versions: dict[str, str]):
        def version(name: str) -> str:
            if name not in versions:
                raise platform.PackageNotFoundError(name)
            return versions[name]

        return version

    for versions, build in (
        ({"vllm-cpu": "0.32.0"}, "cpu"),
        ({"vllm": "0.33.0"}, "gpu"),
        ({"vllm": "0.33.0+cpu"}, "cpu"),
        ({}, None),
    ):
        monkeypatch.setattr(platform, "version", installed(versions))
        assert platform.vllm_build() == build


def test_llm_arguments_by_platform() -> None:
    opts = VLLMOptions(tensor_parallel_size=4, max_num_seqs=512)
    cpu = llm_arguments("/m", VLLMOptions(), on_cpu=True, in_placement_group=False)
    assert cpu["dtype"] == "float32" and cpu["enforce_eager"] is True and "gpu_memory_utilization" not in cpu
    assert cpu["enable_chunked_prefill"] is False  # a CPU generator cannot be rewound after a partial prefill
    gpu = llm_arguments("/m", opts, on_cpu=False, in_placement_group=True)
    assert gpu["dtype"] == "auto" and gpu["enforce_eager"] is False and gpu["gpu_memory_utilization"] == 0.9
    assert gpu["tensor_parallel_size"] == 4 and gpu["max_num_seqs"] == 512
    assert gpu["distributed_executor_backend"] == "ray"  # workers in the replica's placement group
    assert gpu["structured_outputs_config"] == {"backend": "guidance"}
    assert "enable_chunked_prefill" not in gpu
    assert "distributed_executor_backend" not in llm_arguments(
        "/m", opts, on_cpu=False, in_placement_group=False
    )


def test_placement_plans() -> None:
    tp4 = plan_placement(ModelRole(spec="vllm:x", options={"tensor_parallel_size": 4}), cluster_gpus=8)
    assert tp4.gpus == 4 and tp4.actor_gpus == 0 and len(tp4.bundles) == 4 and tp4.strategy == "STRICT_PACK"
    assert all(b["GPU"] == 1 for b in tp4.bundles)  # vLLM wants one GPU per bundle
    pp = plan_placement(
        ModelRole(spec="vllm:x", options={"tensor_parallel_size": 2, "pipeline_parallel_size": 2}),
        cluster_gpus=8,
    )
    assert pp.gpus == 4 and pp.strategy == "PACK"  # pipeline stages may span nodes
    assert plan_placement(ModelRole(spec="vllm:x"), cluster_gpus=0).gpus == 0  # a CPU cluster: vllm-cpu
    assert (
        plan_placement(ModelRole(spec="vllm:x"), cluster_gpus=8).gpus == 1
        and not plan_placement(ModelRole(spec="vllm:x"), cluster_gpus=8).bundles
    )
    hf2 = plan_placement(ModelRole(spec="hf:x", num_gpus=2), cluster_gpus=8)
    assert hf2.actor_gpus == 2 and hf2.bundles == [{"GPU": 2, "CPU": 1.0}]  # one process sees both
    assert plan_placement(ModelRole(spec="openai:m@http://h/v1"), cluster_gpus=8).gpus == 0
    with pytest.raises(ValueError, match="needs 4 GPUs per replica, but num_gpus is 2"):
        plan_placement(
            ModelRole(spec="vllm:x", options={"tensor_parallel_size": 4}, num_gpus=2), cluster_gpus=8
        )


def test_where_vllm_is_missing_the_hf_engine_runs_the_model_with_a_note(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from infra.engines import engine_to_run

    monkeypatch.setattr(platform, "vllm_build", lambda: None)
    spec, note = engine_to_run("vllm:smollm2", {"chat_template": "vicuna"})
    assert str(spec) == "hf:smollm2" and note and "vLLM is not installed" in note and "\n" not in note
    # Options only vLLM takes: no silent fallback (loading then says vLLM is needed).
    spec, note = engine_to_run("vllm:org/big", {"tensor_parallel_size": 4})
    assert str(spec) == "vllm:org/big" and note is None
    monkeypatch.setattr(platform, "vllm_build", lambda: "cpu")
    assert engine_to_run("vllm:smollm2") == (engine_to_run("vllm:smollm2")[0], None)
