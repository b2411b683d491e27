"""The ``monitor`` pipeline: how well an activation monitor detects each method, as a record.

The methods are fitted exactly as ``compare`` fits them (one pass over every layer, the same
layer choice and registry: ``fitting.fit_methods``), each set to its strength
(``settings.strength``); an ``ActivationMonitor`` is fitted on the clean training prompts at
the monitored layers, and ``detect.evaluate_detection`` scores the held-out prompts, clean and
intervened (with a ``probe`` per method when ``settings.probe``). ``eval.jobs.monitor_job``
writes the record this returns.
"""

from typing import Any

from ..core.errors import UserInputError
from ..lens.monitor import ActivationMonitor, MonitorSpec
from ..lens.training import prompts_hash
from .choices import choose_layers
from .common import at_strength, log
from .detect import DetectionOptions, evaluate_detection
from .fitting import collect_training_activations, fit_methods
from .prompt_sets import JobPrompts, held_out_overlap
from .record import MonitorPromptsRecord, MonitorRecord
from .settings import MonitorSettings


def check_monitor_prompts(prompts: JobPrompts) -> None:
    """Raise unless ``monitor`` can score ``prompts``: an AUROC with its CI needs at least two
    held-out harmful prompts (the positives) and one harmless; the fits need two training
    prompts per class."""
    held_out = prompts.held_out
    if len(held_out.harmful) < 2 or not held_out.harmless:
        raise UserInputError(
            "monitor needs at least 2 held-out harmful prompts and 1 held-out harmless one, got "
            f"{len(held_out.harmful)} and {len(held_out.harmless)}; raise --n-eval or give "
            "longer --eval-harmful / --eval-harmless files"
        )
    if len(prompts.train_harmful) < 2 or len(prompts.train_harmless) < 2:
        raise UserInputError(
            "monitor needs at least 2 training prompts per class, got "
            f"{len(prompts.train_harmful)} harmful and {len(prompts.train_harmless)} harmless"
        )


def _prompts_record(prompts: JobPrompts) -> MonitorPromptsRecord:
    """The hashes and sizes of the monitor's prompts, for its record."""
    held_out = prompts.held_out
    return MonitorPromptsRecord(
        train_sha256=prompts_hash(prompts.train_harmful, prompts.train_harmless),
        eval_sha256=prompts_hash(held_out.harmful, held_out.harmless),
        n_train_harmful=len(prompts.train_harmful),
        n_train_harmless=len(prompts.train_harmless),
        n_eval_harmful=len(held_out.harmful),
        n_eval_harmless=len(held_out.harmless),
        train_eval_overlap=len(held_out_overlap(prompts.train, held_out)),
    )


def run_monitor(
    model: Any,
    prompts: JobPrompts,
    settings: MonitorSettings,
    *,
    model_name: str,
    command: str | None = None,
    strengths_source: str | None = None,
    progress: bool = True,
) -> MonitorRecord:
    """Fit the methods and the monitor on the training prompts, score the held-out ones and
    return the ``detect.json`` record.

    ``strengths_source`` says where ``settings.strengths`` came from (e.g. the compare
    ``results.json`` they were read from; default "settings"); methods they do not name run
    at strength 1 ("default").
    """
    check_monitor_prompts(prompts)
    n_layers, d_model = model.cfg.n_layers, model.cfg.d_model
    settings.check_layers(n_layers)
    k = settings.map.n_components
    assert k is not None  # JobSettings requires a k
    if k >= d_model:
        raise UserInputError(
            f"n_components must be below d_model={d_model} (the monitor scores the complement "
            f"of its k-dim subspace too), got {k}; lower -k"
        )
    compare = settings.compare_settings().resolve(n_layers)
    train_h, train_b = prompts.train_harmful, prompts.train_harmless
    training = collect_training_activations(
        model, train_h, train_b, compare, compare.methods, progress=progress
    )
    compare, choice = choose_layers(compare, training, n_layers)
    log(f"selective layers ({choice.how}): {compare.layers}", progress)
    fitted, _ = fit_methods(model, train_h, train_b, compare, training=training, progress=progress)
    sources = {
        m: (strengths_source or "settings") if m in settings.strengths else "default"
        for m in settings.methods
    }
    strengths = {m: settings.strength(m) for m in settings.methods}
    interventions = {m: at_strength(fitted[m], strengths[m]) for m in settings.methods}
    monitor_layers = settings.resolve_monitor_layers(choice.layers, n_layers)
    log(f"fitting the monitor at {settings.hook} of layers {monitor_layers}", progress)
    monitor = ActivationMonitor.fit(
        model,
        train_h,
        train_b,
        layers=monitor_layers,
        spec=MonitorSpec(n_components=k),
        hook=settings.hook,  # type: ignore[arg-type]
        collect=settings.collecting(progress=progress),
        training=training,  # stands in for the pass when the monitor reads resid_pre
    )
    log("scoring held-out prompts, clean and under each method", progress)
    detection = evaluate_detection(
        model,
        monitor,
        interventions,
        prompts.held_out.harmful,
        prompts.held_out.harmless,
        probe_training=(train_h, train_b) if settings.probe else None,
        options=DetectionOptions(seed=settings.seed),
    )
    return MonitorRecord(
        model=model_name,
        settings=settings,
        prompts=_prompts_record(prompts),
        strengths=strengths,
        strength_sources=sources,
        layers=list(choice.layers),
        layer_choice=choice.how,
        direction_layer=int(compare.direction_layer),  # type: ignore[arg-type]
        monitor_layers=monitor_layers,
        hook=detection.hook,
        positions=detection.positions,
        results=list(detection.results),
        w2_by_layer=choice.w2,
        command=command,
    )
