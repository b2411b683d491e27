"""The whole job's progress bar (``eval.job_progress``) and ``compare``'s plan of the passes it
runs (``eval.job_plan``): the plan is what the job does, stage by stage."""

import pytest
import torch

from tests.helpers import HARMFUL, HARMLESS, HELD_OUT, VALIDATION
from tl_ot_ablation.core.bars import stage_bar_off
from tl_ot_ablation.eval import job_plan, job_progress
from tl_ot_ablation.eval.compare import run_comparison
from tl_ot_ablation.eval.evaluate import next_token_logprobs
from tl_ot_ablation.eval.job_progress import CostModel, JobProgress, Pass, minutes
from tl_ot_ablation.eval.settings import CompareSettings
from tl_ot_ablation.lens.collect import prepare_tokens

TOKENS = CostModel(0.0, 1.0)  # a "second" per token: the bar counts tokens
CALLS = CostModel(1.0, 0.0)  # a "second" per call: the bar counts model calls


def test_a_pass_is_a_prefill_per_batch_then_one_call_per_new_token() -> None:
    assert list(Pass(5, 10, 2, new_tokens=3).calls()) == [
        (1, 20), (2, 2), (1, 20), (2, 2), (1, 10), (2, 1),
    ]  # fmt: skip
    assert list(Pass(3, 7, 4).calls()) == [(1, 21)]
    assert CostModel(0.5, 0.01).of([Pass(3, 7, 4, new_tokens=2)]) == pytest.approx(
        2 * 0.5 + 0.01 * (21 + 3)
    )


def test_durations_read_as_people_say_them() -> None:
    assert [minutes(s) for s in (42.0, 420.0, 7860.0)] == ["42 s", "7 min", "2 h 11 min"]


def test_the_bar_counts_the_models_calls_and_ends_full(tiny_bridge) -> None:
    prompts = ["a b c", "hello there", "d"]
    ids, _ = prepare_tokens(tiny_bridge, prompts)
    one_pass = Pass(3, ids.shape[1], 2)
    plan = [("exact", [one_pass]), ("cheaper", [one_pass, one_pass]), ("dearer", [])]
    with JobProgress(tiny_bridge, plan, TOKENS) as job:
        assert stage_bar_off(True)  # the passes' own bars stay off under the job's bar
        with job.stage("exact"):
            next_token_logprobs(tiny_bridge, prompts, batch_size=2)
        assert job.spent["exact"] == job.planned["exact"] == ids.numel()
        with job.stage("cheaper"):  # a cached result: the bar jumps to the stage's end
            next_token_logprobs(tiny_bridge, prompts, batch_size=2)
        assert job.done == job.planned["exact"] + job.planned["cheaper"]
        with job.stage("dearer"):  # more than planned: the total grows
            next_token_logprobs(tiny_bridge, prompts, batch_size=2)
        assert job.total == 4 * ids.numel()
    assert job.done == job.total and not stage_bar_off(True)


def test_stages_run_once_in_the_plans_order(tiny_bridge) -> None:
    plan = [("first", [Pass(1, 1, 1)]), ("second", [Pass(1, 1, 1)])]
    with JobProgress(tiny_bridge, plan, TOKENS) as job:
        with pytest.raises(ValueError, match="'third' is not in the job's plan"):
            with job.stage("third"):
                pass
        with job.stage("second"):  # "first" was not needed: skipped, the bar moves past it
            pass
        assert job.done == 2
        with pytest.raises(ValueError, match="'first' ran twice or out of order"):
            with job.stage("first"):
                pass
    with pytest.raises(ValueError, match="distinct names"):
        JobProgress(tiny_bridge, [("a", []), ("a", [])], TOKENS)


def test_without_progress_the_job_draws_and_counts_nothing(tiny_bridge) -> None:
    job = JobProgress(tiny_bridge, [], None)
    with job, job.stage("anything"):
        assert not stage_bar_off(True)
        next_token_logprobs(tiny_bridge, ["a b c"])
    assert job.done == 0


def test_the_calibrated_cost_is_positive_and_grows_with_tokens(tiny_bridge) -> None:
    cost = CostModel.calibrated(tiny_bridge, rows=4, length=16)
    assert cost.per_call >= 0 and cost.per_token >= 0
    assert cost.seconds(64) >= cost.seconds(4) > 0


@pytest.mark.parametrize("cost", [TOKENS, CALLS], ids=["tokens", "calls"])
def test_the_compare_plan_is_what_compare_runs(tiny_bridge, monkeypatch, cost) -> None:
    """Stage by stage, the plan's calls and tokens are the job's, except where a search may
    stop sooner (the KL bisections, reused and stopped candidates): there the plan is an
    upper bound."""
    monkeypatch.setattr(CostModel, "calibrated", classmethod(lambda cls, *a, **k: cost))
    jobs: list[JobProgress] = []
    monkeypatch.setattr(
        job_plan, "JobProgress", lambda *a, **k: jobs.append(JobProgress(*a, **k)) or jobs[-1]
    )
    settings = CompareSettings.preset(
        n_components=4,
        layers="judged",
        max_new_tokens=3,
        batch_size=4,
        bisection_steps=2,
        strength_fractions=(0.5, 1.0),
        n_questions=0,
        detect=False,
        early_stop=None,
    )
    run_comparison(
        tiny_bridge, HARMFUL, HARMLESS, HELD_OUT, settings, validation=VALIDATION, progress=True
    )
    [job] = jobs
    searches = {job_plan.LAYER_SEARCH, *(job_plan.strength_stage(m) for m in settings.methods)}
    assert set(job.spent) == set(job.planned) - {job_plan.GATE_NEIGHBOURS}
    for stage, spent in job.spent.items():
        if stage in searches:
            assert 0 < spent <= job.planned[stage], stage
        else:
            assert spent == job.planned[stage], stage
    assert job.done == job.total
    assert job_progress.minutes(job.total)  # the estimate line's duration


def test_the_time_left_scales_the_plan_by_the_calls_measured_pace(tiny_bridge, monkeypatch) -> None:
    """Calls that took twice their estimate double the estimate of what is left; a stage's
    jump (work skipped) is not taken for pace."""
    now = [100.0]  # the job starts at 100 s
    monkeypatch.setattr(job_progress.time, "perf_counter", lambda: now[0])
    plan = [("ran", [Pass(1, 2, 1)]), ("skipped", [Pass(1, 2, 1)]), ("left", [Pass(1, 4, 1)])]
    with JobProgress(tiny_bridge, plan, TOKENS) as job:
        now[0] = 104.0  # 2 "seconds" of calls took 4 s
        job._count(None, (torch.zeros(1, 2, dtype=torch.long),))
        job._settle("ran")
        job._settle("skipped")  # a jump of 2
        assert job.counted == 2 and job.done == 4
        assert job.seconds_left() == pytest.approx(4 * (104 - 100) / 2)


def test_a_model_without_a_hugging_face_inside_is_counted_at_its_embed() -> None:
    """A ``HookedTransformer``-like model (``embed``, no ``original_model``) is counted at its
    own embedding; an object with neither moves the bar stage by stage only."""

    class Hooked(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(10, 4)

    model = Hooked()
    with JobProgress(model, [("one", [Pass(1, 3, 1)])], TOKENS) as job:
        with job.stage("one"):
            model.embed(torch.zeros(1, 3, dtype=torch.long))
        assert job.spent["one"] == 3
    with JobProgress(object(), [("one", [Pass(1, 3, 1)])], TOKENS) as bare:
        with bare.stage("one"):
            pass
    assert bare.spent["one"] == 0 and bare.done == bare.total == 3
