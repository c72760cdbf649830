"""Reflection traces: their structure (``validate``), their answer against the gold (``verify``), which
to score and keep (``keep``), generated problems (``mathgen``) and the Prefect tasks (``shard_tasks``)."""
