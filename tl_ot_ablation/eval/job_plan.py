"""What a ``compare`` run will ask of the model, stage by stage (``job_progress.Pass`` lists).

An estimate for the progress bar, written beside ``compare.run_comparison`` and in its order:
it counts the passes the job makes when nothing is cached and no candidate stops early (so it
is an upper bound of what those save). A stage read back from the result cache (``run_cache``:
the validation reference and measurements, the unmodified model's and each method's held-out
evaluation) is counted as if it ran, since whether it is stored is known only once the method
is fitted: the bar jumps past it when it ends (``JobProgress.stage``), and the time left is
read from the pace of the calls actually made. The layer search's candidates are counted as the
layers at ``JUDGED_DEPTHS`` plus the W2 pick (unknown before the statistics; it may be one of
them) and each KL search as ``bisection_steps + 2`` passes.
``tests/eval/test_job_progress.py`` checks it against the calls a run makes.
"""

from collections.abc import Sequence
from typing import Any

from ..lens.collect import prepare_tokens
from .common import log
from .job_progress import CostModel, JobProgress, Pass
from .prompt_sets import EvalPrompts, ValidationPrompts
from .selection import depth_candidates
from .settings import CompareSettings

Stages = list[tuple[str, list[Pass]]]

TRAINING = "collecting training activations"
VALIDATION = "the validation reference"
LAYER_SEARCH = "choosing the layer"
UNMODIFIED = "evaluating the unmodified model"
GATE_NEIGHBOURS = "finding the gates' nearest training prompts"


def strength_stage(method: str) -> str:
    return f"{method}: choosing its strength"


def evaluation_stage(method: str) -> str:
    return f"evaluating {method}"


def compare_plan(
    model: Any,
    settings: CompareSettings,
    train: tuple[Sequence[str], Sequence[str]],
    prompts: EvalPrompts,
    validation: ValidationPrompts | None,
) -> Stages:
    """The stages of ``run_comparison(model, *train, prompts, settings, validation=...)``,
    each as the passes it runs (``settings`` resolved, as the job resolves them)."""
    collect = settings.collect
    batch = collect.batch_size
    padded: dict[tuple[str, ...], int] = {}  # a set's padded length, tokenized once

    def length(asked: Sequence[str], extra: int = 0) -> int:
        if not asked:
            return 0
        key = tuple(asked)
        if key not in padded:
            ids, _ = prepare_tokens(model, list(asked), system=collect.system, chat=collect.chat)
            padded[key] = int(ids.shape[1])
        return padded[key] + extra

    def forward(asked: Sequence[str], extra: int = 0) -> Pass:
        return Pass(len(asked), length(asked, extra), batch)

    def generation(asked: Sequence[str]) -> Pass:
        return Pass(len(asked), length(asked), batch, settings.max_new_tokens)

    new = settings.max_new_tokens
    evaluation = [generation(prompts.harmful), generation(prompts.harmless)]
    if prompts.xstest is not None:
        evaluation += [generation(prompts.xstest.safe), generation(prompts.xstest.unsafe)]
    evaluation += [forward(prompts.harmless, new), forward(prompts.harmful, new)]
    if prompts.texts:
        texts = model.tokenizer(list(prompts.texts))["input_ids"]
        evaluation.append(Pass(len(texts), max(len(t) for t in texts), batch))
    if prompts.questions:
        evaluation.append(forward([q.prompt() for q in prompts.questions]))

    stages: Stages = [(TRAINING, [forward(train[0]), forward(train[1])])]
    if validation is None:
        kl_search: list[Pass] = []
        judged: list[Pass] = []
    else:
        stages.append((VALIDATION, [forward(validation.harmless)]))
        kl_search = [forward(validation.harmless)] * (settings.bisection_steps + 2)
        judged = [generation(validation.harmful)]
        if settings.layers == "judged":
            screen = [forward(validation.harmful)] if settings.early_stop is not None else []
            budget = [forward(validation.harmless)] if settings.match_kl else []
            candidate = [*kl_search, *screen, *judged]
            n_candidates = len(depth_candidates(model.cfg.n_layers)) + 1
            stages.append((LAYER_SEARCH, budget + candidate * n_candidates))
    anchor = judged if settings.select == "compliance" else []
    stages.append((UNMODIFIED, evaluation + anchor))
    fractions = len(settings.strength_fractions) if settings.select == "compliance" else 0
    for method in settings.methods:
        if method == "none":
            continue
        if validation is not None:
            sets_budget = method == "direction_ablation" and settings.match_kl is not None
            searched = [forward(validation.harmless)] * fractions if sets_budget else kl_search
            tries = fractions
            if settings.layers == "judged" and method == settings.judged_method:
                searched = [forward(validation.harmless)] * (fractions - 1)  # the search has
                tries = max(fractions - 1, 0)  # its ceiling's KL and judged pass already
            stages.append((strength_stage(method), searched + judged * tries))
        stages.append((evaluation_stage(method), evaluation))
    if settings.gate_neighbours:
        stages.append((GATE_NEIGHBOURS, [forward(train[0]), forward(train[1])]))
    return stages


def compare_progress(
    model: Any,
    settings: CompareSettings,
    train: tuple[Sequence[str], Sequence[str]],
    prompts: EvalPrompts,
    validation: ValidationPrompts | None,
    progress: bool,
) -> JobProgress:
    """The whole job's bar (``progress``: calibrated, its estimate logged before it starts;
    else one that draws nothing)."""
    if not progress:
        return JobProgress(model, [], None)
    plan = compare_plan(model, settings, train, prompts, validation)
    first = plan[0][1][0]
    cost = CostModel.calibrated(model, settings.collect.batch_size, max(first.length, 1))
    job = JobProgress(model, plan, cost, desc="compare")
    log(job.estimate_line(), progress)
    return job
