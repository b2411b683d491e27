"""The jobs from a notebook: ``tlo.compare``, ``tlo.sweep``, ``tlo.monitor``, ``tlo.choose_layer``.

Each runs what the command of the same name runs (``eval.jobs``), on a model you already
loaded, and returns its typed record (``record.CompareRecord``, ``SweepRecord``,
``MonitorRecord``); given ``out``, it also writes the same report folder. Settings come from a
preset (``"default"`` or ``"quick"``) with keyword changes on top, or from a settings object;
prompts are the package's own splits unless ``prompts`` (``JobPrompts``) says otherwise.

Example (on a tiny random-weight model; use ``tlo.load_model()`` for the embedded one):
    >>> import tl_ot_ablation as tlo
    >>> from tl_ot_ablation.lens.tiny import tiny_model
    >>> record = tlo.compare(
    ...     tiny_model(n_ctx=512), preset="quick", methods=("none", "direction_ablation"),
    ...     match_kl=None, select="kl", layers=[1], n_train=4, n_eval=2, n_texts=1,
    ...     n_questions=0, max_new_tokens=2, n_components=4, detect=False, progress=False)
    >>> sorted(record.methods)
    ['direction_ablation', 'none']
"""

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

from ..core.errors import UserInputError
from ..io.result_cache import ResultCache
from .choices import choose_layer as judged_layer_choice
from .job_guards import JobOutput
from .jobs import JobPrompts, compare_job, monitor_job, sweep_job
from .record import CompareRecord, MonitorRecord, SweepRecord
from .selection import LayerChoice
from .settings import CompareSettings, JobSettings, MonitorSettings, SweepSettings

S = TypeVar("S", bound=JobSettings)


def _settings(kind: type[S], settings: S | None, preset: str, changes: dict[str, Any]) -> S:
    """``settings`` with ``changes`` on top, or the ``preset`` with them (the map's and the
    collection's fields too, by name: ``n_components=16``, ``batch_size=8``)."""
    if settings is None:
        return kind.preset(preset, **changes)
    if not isinstance(settings, kind):
        raise TypeError(f"settings must be a {kind.__name__}, got {type(settings).__name__}")
    return settings.with_changes(**changes) if changes else settings


def _job_arguments(
    model: Any,
    settings: JobSettings,
    prompts: JobPrompts | None,
    out: str | Path | None,
    overwrite: bool,
    progress: bool,
    cache: bool = False,
) -> dict[str, Any]:
    """What every ``eval.jobs`` function takes, from the API's arguments."""
    output = JobOutput(out, plots=out is not None, overwrite=overwrite)
    return {
        "model": model,
        "prompts": prompts or JobPrompts.shipped(settings),
        "settings": settings,
        "out": dataclasses.replace(output, cache=ResultCache() if cache else None),
        "model_name": str(getattr(model.cfg, "model_name", None) or type(model).__name__),
        "progress": progress,
    }


def compare(
    model: Any,
    *,
    settings: CompareSettings | None = None,
    preset: str = "default",
    prompts: JobPrompts | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    cache: bool = True,
    **changes: Any,
) -> CompareRecord:
    """``tl-ot-ablation compare`` from Python: every method fitted, its strength matched and
    chosen on validation prompts, evaluated on held-out ones (``CompareSettings`` documents
    every field you can change, e.g. ``methods=``, ``layers=``, ``n_eval=``). The default
    setting chooses the layer by judged compliance too: on a CPU that takes hours (README,
    run times); ``preset="quick"`` is the small one. ``cache`` keeps the validation
    measurements and every method's held-out evaluation on disk (``eval.run_cache``), so a
    second run on the same prompts decodes only what changed (e.g. one more method)."""
    chosen = _settings(CompareSettings, settings, preset, changes)
    arguments = _job_arguments(model, chosen, prompts, out, overwrite, progress, cache)
    record, _ = compare_job(**arguments, preset=preset if settings is None else None)
    return record


def sweep(
    model: Any,
    *,
    settings: SweepSettings | None = None,
    preset: str = "default",
    prompts: JobPrompts | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **changes: Any,
) -> SweepRecord:
    """``tl-ot-ablation sweep`` from Python: layers, adjacent pairs, ``k`` and strength, scored
    by refusal log-odds and harmless KL (and judged compliance with ``judged=True``)."""
    chosen = _settings(SweepSettings, settings, preset, changes)
    _, record, _ = sweep_job(**_job_arguments(model, chosen, prompts, out, overwrite, progress))
    return record


def monitor(
    model: Any,
    *,
    settings: MonitorSettings | None = None,
    preset: str = "default",
    prompts: JobPrompts | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **changes: Any,
) -> MonitorRecord:
    """``tl-ot-ablation monitor`` from Python: how well an activation monitor fitted on clean
    prompts detects each method (AUROC, TPR at 1 % FPR)."""
    chosen = _settings(MonitorSettings, settings, preset, changes)
    record, _ = monitor_job(**_job_arguments(model, chosen, prompts, out, overwrite, progress))
    return record


def choose_layer(
    model: Any,
    *,
    settings: CompareSettings | None = None,
    prompts: JobPrompts | None = None,
    progress: bool = True,
    **changes: Any,
) -> LayerChoice:
    """The layer ``compare`` would choose: of the layers at 40/50/60 % depth and the W2 pick,
    the one where the gated map at its KL ceiling (direction ablation's validation KL) makes
    the model comply most often on the validation prompts, as judged. One KL search and one
    judged generation pass per candidate (about 35 min for the embedded model on 2 CPU
    cores). ``choice.layers[0]`` is the layer; ``choice.trials`` every candidate's numbers."""
    chosen = _settings(CompareSettings, settings, "default", changes)
    prompts = prompts or JobPrompts.shipped(chosen)
    if prompts.validation is None:
        raise UserInputError("choose_layer needs validation prompts: JobPrompts(validation=...)")
    return judged_layer_choice(
        model,
        prompts.train_harmful,
        prompts.train_harmless,
        prompts.validation,
        chosen,
        progress=progress,
    )
