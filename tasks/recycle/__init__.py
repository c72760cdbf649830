"""Selective Reflection-Tuning, per shard: the variants of each pair (``variants``), the reference
decision tree (``select``), and the Prefect tasks of its stages (``shard_tasks``)."""
