"""A pairwise judge with the reference protocol, and single-answer ratings (docs/judge.md).

``protocol``: prompts, reply form and parsers; ``verdict``: the reference aggregation; ``stages``: the
two verbs over an engine. All pure: an engine is passed in, nothing here knows Ray, Prefect or I/O.
"""
