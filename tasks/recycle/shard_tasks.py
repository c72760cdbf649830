"""The recycle flow's Prefect tasks, one per (stage, shard): thin wrappers of ``tasks.shards.run_stage``
around the recycle stages' pure logic."""

from __future__ import annotations

from prefect import task

from tasks.recycle.variants import candidates, reflected_pairs, request_failures, score_rows, selection_rows
from tasks.scoring.score import score_pairs
from tasks.shard_tasks import TASK_OPTIONS
from tasks.shards import (
    INSTRUCTION,
    RESPONSE,
    SCORE,
    SELECT,
    Rows,
    Services,
    ShardJob,
    ShardStore,
    ShardSummary,
    reflections_of,
    run_stage,
    upstream,
)
from tasks.teacher.forms import instruction_form, response_form
from tasks.teacher.stages import reflect_instructions, reflect_responses


@task(name="reflect-instructions", **TASK_OPTIONS)
def reflect_instructions_task(job: ShardJob, services: Services) -> ShardSummary:
    def compute(_: ShardStore) -> Rows:
        rows, _stats = reflect_instructions(
            job.seeds(), services.engine(job.teacher), job.sampling, constrained=job.constrained
        )
        return [r.to_dict() for r in rows]

    return run_stage(job, services, INSTRUCTION, compute)


@task(name="reflect-responses", **TASK_OPTIONS)
def reflect_responses_task(job: ShardJob, services: Services) -> ShardSummary:
    def compute(store: ShardStore) -> Rows:
        teacher = services.engine(job.teacher)
        seeds = job.seeds()
        instruction_rows = reflections_of(upstream(store, job, INSTRUCTION))
        original, _ = reflect_responses(
            seeds, teacher, job.sampling, which="original", constrained=job.constrained
        )
        reflected, _ = reflect_responses(
            reflected_pairs(seeds, instruction_rows),
            teacher,
            job.sampling,
            which="reflected",
            constrained=job.constrained,
        )
        return [r.to_dict() for r in [*original, *reflected]]

    return run_stage(job, services, RESPONSE, compute)


@task(name="score-variants", **TASK_OPTIONS)
def score_task(job: ShardJob, services: Services) -> ShardSummary:
    def compute(store: ShardStore) -> Rows:
        student = services.engine(job.student)
        cands = candidates(
            job.seeds(),
            reflections_of(upstream(store, job, INSTRUCTION)),
            reflections_of(upstream(store, job, RESPONSE)),
        )
        return score_rows(cands, score_pairs([c.text for c in cands], student), student.spec)

    return run_stage(job, services, SCORE, compute)


@task(name="select", **TASK_OPTIONS)
def select_task(job: ShardJob, services: Services) -> ShardSummary:
    def compute(store: ShardStore) -> Rows:
        version = "+".join(job.prompt_versions[k] for k in ("reflect_instruction", "reflect_response"))
        forms = (instruction_form(job.sampling.max_tokens), response_form(job.sampling.max_tokens))
        version += "+json" if job.constrained and all(f.fits() for f in forms) else ""
        reflections = reflections_of([*upstream(store, job, INSTRUCTION), *upstream(store, job, RESPONSE)])
        return selection_rows(
            upstream(store, job, SCORE),
            teacher=job.teacher.spec,
            student=job.student.spec,
            prompt_version=version,
            failures=request_failures(reflections),
        )

    return run_stage(job, services, SELECT, compute)
