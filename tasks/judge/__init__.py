"""A pairwise judge with the reference protocol, and single-answer ratings (DESIGN.md section 2, step 6).

``protocol``: prompts, reply form and parsers; ``verdict``: the reference aggregation; ``stages``: the
two verbs over an engine. All pure: an engine is passed in, nothing here knows Ray, Prefect or I/O.
"""
