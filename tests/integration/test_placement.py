"""Replicas that need several GPUs reserve them through placement groups (GPUs declared to Ray).

Ray is told the machine has 4 GPUs; the replicas run the tiny model on the CPU, so what is tested
is the placement: two replicas of 2 GPUs each are placed in placement groups of their own, and a
replica that cannot fit is a clear error after a short timeout instead of a hang.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.pool import EnginePool, PoolError
from tasks.engine import ModelRole

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_with_4_gpus() -> Iterator[None]:
    import ray

    ray.shutdown()  # a Ray this process started for an in-process run (tests.cli): this one has 4 GPUs
    ray.init(
        address="local", num_cpus=4, num_gpus=4, include_dashboard=False, namespace="reflectory",
        log_to_driver=False,
    )  # fmt: skip
    yield
    ray.shutdown()


def role(model: Path, replicas: int, num_gpus: float, threads: int = 1) -> ModelRole:
    """Different ``threads`` make a different model key, hence replicas of their own."""
    return ModelRole(
        spec=f"hf:{model}", options={"device": "cpu", "threads": threads}, num_cpus=0.5, replicas=replicas,
        num_gpus=num_gpus,
    )  # fmt: skip


def test_two_replicas_of_two_gpus_each_are_placed_and_a_third_gets_a_clear_error(
    ray_with_4_gpus: None, tiny_model_path: Path
) -> None:
    import ray

    pool = EnginePool(role(tiny_model_path, replicas=2, num_gpus=2))
    try:
        groups = {r["placement_group"] for r in pool.replicas_ready}
        assert len(groups) == 2 and None not in groups  # one placement group per replica
        gpus = [set(r["gpus"]) for r in pool.replicas_ready]
        assert all(len(g) == 2 for g in gpus) and not gpus[0] & gpus[1]  # 2 GPUs each, none shared
        assert ray.available_resources().get("GPU", 0) == 0

        # Everything is taken: one more replica waits for its GPUs, then says so.
        with pytest.raises(PoolError, match=r"could not be placed within 3 s: it needs 2 GPUs .* 0 of"):
            EnginePool(role(tiny_model_path, replicas=1, num_gpus=2, threads=2), placement_timeout_s=3)
    finally:
        pool.close()
    # Closing the pool gives the GPUs back (Ray reports freed resources a moment later).
    wait_until_all_free()


def wait_until_all_free() -> None:
    """Every CPU and GPU of the cluster free again: killed replicas and removed placement groups are
    released a moment after (later on a loaded machine), and a test that counts free room needs them."""
    import ray

    deadline = time.monotonic() + 60
    while ray.available_resources().get("GPU", 0) != 4 or ray.available_resources().get("CPU", 0) != 4:
        assert time.monotonic() < deadline, ray.available_resources()
        time.sleep(0.1)


def test_more_gpus_than_the_cluster_has_is_an_error_at_once(
    ray_with_4_gpus: None, tiny_model_path: Path
) -> None:
    with pytest.raises(PoolError, match=r"3 replicas x 2 GPUs .* need 6 GPUs; the Ray cluster has 4"):
        EnginePool(role(tiny_model_path, replicas=3, num_gpus=2))


def test_replicas_without_room_say_so_instead_of_waiting_forever(
    ray_with_4_gpus: None, tiny_model_path: Path
) -> None:
    """No placement group here: an actor asking for more CPUs than are free waits in Ray's queue.
    Replicas load their model after they are placed, so the pool tells the two waits apart."""
    wait_until_all_free()  # what an earlier test of this module released (one of 2 must fit)
    big = ModelRole(
        spec=f"hf:{tiny_model_path}",
        options={"device": "cpu", "threads": 3},
        num_cpus=3,
        num_gpus=0,
        replicas=2,
    )
    t0 = time.monotonic()
    with pytest.raises(PoolError) as caught:
        EnginePool(big, placement_timeout_s=4)
    assert time.monotonic() - t0 < 30
    message = str(caught.value)
    assert "1 of 2 replicas of hf:" in message and "could not be placed within 4 s" in message
    assert "each asks for 3 CPU, 0 GPU; the Ray cluster has 4 CPU, 4 GPU" in message


def test_an_http_teacher_reserves_no_cpu() -> None:
    assert ModelRole(spec="openai:gpt-4o-mini").cpus() == 0
    assert ModelRole(spec="openai:gpt-4o-mini", num_cpus=0.5).cpus() == 0.5
    assert ModelRole(spec="hf:smollm2").cpus() == 1


def test_a_paid_roles_rate_limiter_ends_with_its_pool_so_a_rerun_in_this_process_gets_its_own(
    ray_with_4_gpus: None,
) -> None:
    """A second run of an ``openai:`` role in one process (evaluate's resume, compare's rerun) once
    found the first run's limiter still dying under its name, and its replicas missed it."""
    from infra.pool import _actor_exists

    paid = ModelRole(spec="openai:judge@http://127.0.0.1:9/v1", replicas=2)
    for _ in range(2):
        pool = EnginePool(paid)
        try:
            assert pool.limiter is not None and _actor_exists(pool.limiter)
            assert len(pool.replicas_ready) == 2  # each replica reached the limiter by its name
        finally:
            pool.close()
        assert not _actor_exists(pool.limiter)
