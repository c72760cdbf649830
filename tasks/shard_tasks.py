"""What every Prefect shard task shares: its options.

The one place besides each concept's ``shard_tasks`` module that imports Prefect."""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE


def worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """A failure no retry can change (``final``: a budget met, replicas that cannot be placed) is not
    tried again."""
    return not getattr(state.data, "final", False)


# Retries cover transient failures (an engine replica restarting, a commit conflict); nothing is
# cached or persisted by Prefect: the store is the record.
TASK_OPTIONS: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": [2, 10],
    "retry_condition_fn": worth_retrying,
    "cache_policy": NO_CACHE,
    "persist_result": False,
}
