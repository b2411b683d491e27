"""The jobs behind the CLI commands, callable from Python: one function per command.

Each takes a model, the prompts (``JobPrompts``) and the job's settings, runs it and writes its
output folder; the CLI only parses arguments, loads the model and prints. ``JobPrompts.shipped``
picks the package's own splits cut to the settings' sizes (or reads the user's files), and
refuses overlapping training and evaluation prompts unless allowed.
"""

import dataclasses
import functools
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from ..core.errors import UserInputError
from ..io import atomic
from ..lens.collect import collect_activations, hook_name
from ..lens.fit import collect_every_layer, prompts_hash
from ..lens.intervention_set import InterventionSet
from ..lens.monitor import ActivationMonitor
from ..lens.prompts import (
    check_control_tokens,
    control_tokens_allowed,
    default_prompts,
    load_prompts,
    plain_text,
)
from .capability import Question, load_questions, shipped_questions
from .compare import (
    Comparison,
    EvalPrompts,
    ValidationPrompts,
    at_strength,
    choose_layers,
    collect_training_activations,
    comparison_record,
    fit_methods,
    log,
    overlap,
    run_comparison,
    validation_overlap,
)
from .detect import evaluate_detection
from .methods import METHODS, FitContext, fit_method
from .record import CompareRecord, MonitorPromptsRecord, MonitorRecord, SweepRecord
from .report import (
    write_compare_report,
    write_monitor_report,
    write_sweep_report,
)
from .selection import LayerChoice, middle_layer, resolve_layers
from .settings import CompareSettings, FitSettings, MonitorSettings, SweepSettings
from .sweep import SweepResult, run_sweep
from .xstest import load_over_refusal


@dataclass
class JobPrompts:
    """Training, validation and held-out prompts of a job (``fit`` uses only the training ones;
    ``compare`` chooses strengths on the validation ones)."""

    train_harmful: list[str]
    train_harmless: list[str]
    held_out: EvalPrompts
    validation: ValidationPrompts | None = None

    @classmethod
    def shipped(
        cls,
        settings: Any,
        *,
        harmful: str | Path | None = None,
        harmless: str | Path | None = None,
        eval_harmful: str | Path | None = None,
        eval_harmless: str | Path | None = None,
        texts: str | Path | None = None,
        questions: str | Path | None = None,
        validation_harmful: str | Path | None = None,
        validation_harmless: str | Path | None = None,
        allow_overlap: bool = False,
        xstest: str | Path | None = None,
    ) -> "JobPrompts":
        """The shipped splits, each replaced by a user file where one is given, cut to their
        first ``settings.n_train`` / ``n_validation`` / ``n_eval`` prompts (``n_texts`` prose
        paragraphs, and ``n_questions`` multiple-choice questions spread over the shipped or
        given ones). Validation prompts only for settings with ``n_validation``. ``xstest``:
        an XSTest-style CSV or ``"shipped"`` (``xstest.load_over_refusal``), cut to
        ``settings.n_xstest`` per class; ``None`` (default): no over-refusal prompts."""
        n_eval = getattr(settings, "n_eval", 32)
        n_texts = getattr(settings, "n_texts", 8)
        n_questions = getattr(settings, "n_questions", 0)
        asked: list[Question] = []
        if n_questions > 0:  # read questions only when the job asks them
            pool = load_questions(questions) if questions else shipped_questions()
            if len(pool) < n_questions:
                warnings.warn(
                    f"WARNING: {questions or 'the shipped questions'} hold(s) {len(pool)} "
                    f"questions, fewer than n_questions={n_questions}: asking all {len(pool)} "
                    "(results.json records the number asked)",
                    stacklevel=2,
                )
            asked = spread(pool, n_questions)
        prompts = cls(
            _prompts(harmful, "harmful", "train", settings.n_train),
            _prompts(harmless, "harmless", "train", settings.n_train),
            EvalPrompts(
                _prompts(eval_harmful, "harmful", "eval", n_eval),
                _prompts(eval_harmless, "harmless", "eval", n_eval),
                load_prompts(texts) if texts else plain_text()[:n_texts],
                asked,
            ),
        )
        n_validation = getattr(settings, "n_validation", None)
        if n_validation is not None:
            prompts.validation = ValidationPrompts(
                _prompts(validation_harmful, "harmful", "validation", n_validation),
                _prompts(validation_harmless, "harmless", "validation", n_validation),
            )
        if xstest is not None:
            prompts.held_out.xstest = load_over_refusal(xstest).cut(
                getattr(settings, "n_xstest", None)
            )
        prompts.check_overlap(allow=allow_overlap)
        return prompts

    @property
    def train(self) -> dict[str, list[str]]:
        """The training prompts by class."""
        return {"harmful": self.train_harmful, "harmless": self.train_harmless}

    def check_control_tokens(self, tokenizer: Any, *, system: str | None = None) -> None:
        """Raise ``ValueError`` if ``system`` or a prompt the jobs format as a chat turn (every
        instruction and capability question; not the prose ``texts``) holds one of the
        tokenizer's control tokens (``prompts.check_control_tokens``)."""
        held_out = self.held_out
        parts = {
            "training harmful prompts": self.train_harmful,
            "training harmless prompts": self.train_harmless,
            "held-out harmful prompts": held_out.harmful,
            "held-out harmless prompts": held_out.harmless,
            "capability questions": [question.prompt() for question in held_out.questions],
        }
        if held_out.xstest is not None:
            parts["over-refusal safe prompts"] = held_out.xstest.safe
            parts["over-refusal unsafe prompts"] = held_out.xstest.unsafe
        if self.validation is not None:
            parts["validation harmful prompts"] = self.validation.harmful
            parts["validation harmless prompts"] = self.validation.harmless
        check_control_tokens(tokenizer, (), system=system)
        for where, texts in parts.items():
            check_control_tokens(tokenizer, texts, where=where)

    def check_overlap(self, *, allow: bool) -> int:
        """Raise (or, with ``allow``, warn) if held-out prompts appear in the training ones, or
        validation prompts in either; returns how many do."""
        train = {"harmful": self.train_harmful, "harmless": self.train_harmless}
        found = {
            "held-out prompt(s) also appear in the training prompts": [
                text
                for kind in ("harmful", "harmless")
                for text in overlap(train[kind], getattr(self.held_out, kind))
            ]
        }
        if self.validation is not None:
            found["validation prompt(s) also appear in the training or held-out prompts"] = (
                validation_overlap(train, self.held_out, self.validation)
            )
        for what, shared in found.items():
            if not shared:
                continue
            message = (
                f"{len(shared)} {what} (e.g. {shared[0]!r}); results on them measure "
                "memorisation, not generalisation"
            )
            if not allow:
                raise UserInputError(
                    f"{message}. Use disjoint files, or allow the overlap (allow_overlap=True; "
                    "CLI: --allow-overlap)"
                )
            warnings.warn(f"WARNING: {message}", stacklevel=2)
        return sum(len(shared) for shared in found.values())


def spread(items: list[Any], n: int) -> list[Any]:
    """``n`` items spread evenly over ``items`` (all of them when ``n`` is larger), so a subset
    of the shipped questions keeps every topic."""
    if n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def _prompts(path: str | Path | None, kind: str, split: str, n: int) -> list[str]:
    prompts = load_prompts(path) if path else default_prompts(kind, split)  # type: ignore[arg-type]
    return prompts[:n]


def check_output(folder: str | Path, *, overwrite: bool) -> Path:
    """Fail before any work if ``folder`` cannot be written at the end: not writable, a file,
    or a non-empty folder holding files the package did not write, without ``overwrite``."""
    atomic.check_target(folder, overwrite=overwrite)
    return Path(folder)


P = ParamSpec("P")
R = TypeVar("R")


def claims_output(job: Callable[P, R]) -> Callable[P, R]:
    """Check a job's ``out`` folder before it runs and hold it (``atomic.claim``) until the job
    has written it, so a concurrent run on the same folder is refused before it starts."""
    signature = inspect.signature(job)

    @functools.wraps(job)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        out = bound.arguments["out"]
        if out is None:  # nothing to write (a Python caller wants the record only)
            return job(*args, **kwargs)
        check_output(out, overwrite=bound.arguments["overwrite"])
        with atomic.claim(out):
            return job(*args, **kwargs)

    return run


def checks_prompts(job: Callable[P, R]) -> Callable[P, R]:
    """Refuse control tokens in a job's prompts or system prompt before it runs (one error
    before the first pass, not after hours of work), unless its settings'
    ``allow_control_tokens``; with it, run the job inside ``control_tokens_allowed()``, so the
    formatting deep inside accepts them too."""
    signature = inspect.signature(job)

    @functools.wraps(job)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        bound = signature.bind(*args, **kwargs).arguments
        settings = bound["settings"]
        allow = bool(getattr(settings, "allow_control_tokens", False))
        if not allow:
            bound["prompts"].check_control_tokens(bound["model"].tokenizer, system=settings.system)
        with control_tokens_allowed(allow):
            return job(*args, **kwargs)

    return run


def clouds(
    model: Any, comparison: Comparison, held_out: EvalPrompts, settings: CompareSettings
) -> tuple[Any, Any, Any, str] | None:
    """Held-out activations at the first selective layer's last prompt token, before and after
    ``ot_selective``, for ``plots.plot_clouds`` (``None`` without that method)."""
    selective = comparison.interventions.get("ot_selective")
    layers = comparison.settings.layers
    if selective is None or isinstance(layers, str):
        return None
    name = hook_name("resid_pre", layers[0])
    collect = dataclasses.replace(settings.collect(progress=False), positions="last")
    rows = {
        kind: collect_activations(model, prompts, name, **collect.kwargs())[name]
        for kind, prompts in (("harmful", held_out.harmful), ("harmless", held_out.harmless))
    }
    transport = selective.to("cpu")[name]
    title = f"Layer {layers[0]}, last prompt token (held-out prompts)"
    return rows["harmful"], rows["harmless"], transport(rows["harmful"]), title


@claims_output
@checks_prompts
def compare_job(
    model: Any,
    prompts: JobPrompts,
    settings: CompareSettings,
    out: str | Path | None,
    *,
    model_name: str,
    command: str | None = None,
    preset: str | None = None,
    plots: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[CompareRecord, Path | None]:
    """``tl-ot-ablation compare``: run the comparison and write its report folder (none when
    ``out`` is ``None``: the record only)."""
    comparison = run_comparison(
        model,
        prompts.train_harmful,
        prompts.train_harmless,
        prompts.held_out,
        settings,
        validation=prompts.validation,
        progress=progress,
    )
    record = comparison_record(
        comparison,
        model_name=model_name,
        train=prompts.train,
        held_out=prompts.held_out,
        validation=prompts.validation,
        command=command,
        preset=preset,
    )
    if out is None:
        return record, None
    folder = write_compare_report(
        out,
        record,
        {name: result.completions for name, result in comparison.results.items()},
        prompts.held_out.sets(),
        clouds=clouds(model, comparison, prompts.held_out, settings) if plots else None,
        plots_enabled=plots,
        overwrite=overwrite,
    )
    return record, folder


@claims_output
@checks_prompts
def sweep_job(
    model: Any,
    prompts: JobPrompts,
    settings: SweepSettings,
    out: str | Path | None,
    *,
    model_name: str,
    command: str | None = None,
    plots: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[SweepResult, SweepRecord, Path | None]:
    """``tl-ot-ablation sweep``: run the sweep and write its report folder (none when ``out``
    is ``None``)."""
    result = run_sweep(
        model,
        prompts.train_harmful,
        prompts.train_harmless,
        prompts.held_out.harmful,
        prompts.held_out.harmless,
        settings,
        progress=progress,
    )
    record = result.to_record(model=model_name, command=command)
    if out is None:
        return result, record, None
    folder = write_sweep_report(
        out,
        record,
        plots_enabled=plots,
        overwrite=overwrite,
        completions=result.completions_json() if settings.judged else None,
    )
    return result, record, folder


@claims_output
@checks_prompts
def fit_job(
    model: Any,
    prompts: JobPrompts,
    settings: FitSettings,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[InterventionSet, LayerChoice, Path]:
    """``tl-ot-ablation fit``: fit one registered method and save it as an InterventionSet.

    Layers are chosen as in ``compare`` (``resolve_layers``): ``"auto"`` ranks every layer by
    W2² / variance from one pass, which the fit then reuses."""
    n_layers = model.cfg.n_layers
    method = METHODS[settings.method]
    collect = settings.collect(progress=progress)
    training = None
    stats = None
    if method.selective and settings.layers == "auto":
        log(f"collecting activations at all {n_layers} layers", progress)
        estimator = settings.estimator if method.transport else "ridge"
        training = collect_every_layer(
            model,
            prompts.train_harmful,
            prompts.train_harmless,
            estimator=estimator,
            **collect.kwargs(),
        )
        stats = training.stats
    if method.selective:
        choice = resolve_layers(
            settings.layers, n_layers, stats, n_components=settings.n_components, reg=settings.reg
        )
        direction = settings.direction_layer
        direction = middle_layer(n_layers) if direction is None else direction
    else:  # direction ablation: its one layer is the direction's
        given = settings.direction_layer
        spec = [given] if given is not None else settings.layers
        choice = resolve_layers("middle" if spec == "auto" else spec, n_layers)
        direction = choice.layers[0]
    context = FitContext(
        model,
        prompts.train_harmful,
        prompts.train_harmless,
        choice.layers,
        direction,
        settings.map_spec(),
        collect,
        settings.sequential,
        training,
    )
    fitted = fit_method(settings.method, context)
    return fitted, choice, fitted.save(out, overwrite=overwrite)


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


@claims_output
@checks_prompts
def monitor_job(
    model: Any,
    prompts: JobPrompts,
    settings: MonitorSettings,
    out: str | Path | None,
    *,
    model_name: str,
    command: str | None = None,
    strengths_source: str | None = None,
    plots: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[MonitorRecord, Path | None]:
    """``tl-ot-ablation monitor``: how well an activation monitor detects each method.

    The methods are fitted exactly as ``compare`` fits them (one pass over every layer, the
    same layer choice and registry: ``compare.fit_methods``), each set to its strength
    (``settings.strength``); an ``ActivationMonitor`` is fitted on the clean training prompts
    at the monitored layers and ``evaluate_detection`` scores the held-out prompts, clean and
    intervened (with a ``probe`` per method when ``settings.probe``). Writes ``detect.json``,
    ``report.md`` and ``detection.png`` atomically (nothing when ``out`` is ``None``).

    ``strengths_source`` says where ``settings.strengths`` came from (e.g. the compare
    ``results.json`` they were read from; default "settings"); methods they do not name run
    at strength 1 ("default").
    """
    check_monitor_prompts(prompts)
    n_layers, d_model = model.cfg.n_layers, model.cfg.d_model
    settings.check_layers(n_layers)
    if settings.n_components >= d_model:
        raise UserInputError(
            f"n_components must be below d_model={d_model} (the monitor scores the complement "
            f"of its k-dim subspace too), got {settings.n_components}; lower -k"
        )
    compare = settings.compare_settings().resolve(n_layers)
    train_h, train_b = prompts.train_harmful, prompts.train_harmless
    training = collect_training_activations(model, train_h, train_b, compare, progress=progress)
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
        n_components=settings.n_components,
        hook=settings.hook,  # type: ignore[arg-type]
        training=training,  # stands in for the pass when the monitor reads resid_pre
        **settings.collect(progress=progress).kwargs(),
    )
    log("scoring held-out prompts, clean and under each method", progress)
    detection = evaluate_detection(
        model,
        monitor,
        interventions,
        prompts.held_out.harmful,
        prompts.held_out.harmless,
        probe_training=(train_h, train_b) if settings.probe else None,
        seed=settings.seed,
    )
    held_out = prompts.held_out
    record = MonitorRecord(
        model=model_name,
        settings=settings,
        prompts=MonitorPromptsRecord(
            train_sha256=prompts_hash(train_h, train_b),
            eval_sha256=prompts_hash(held_out.harmful, held_out.harmless),
            n_train_harmful=len(train_h),
            n_train_harmless=len(train_b),
            n_eval_harmful=len(held_out.harmful),
            n_eval_harmless=len(held_out.harmless),
            train_eval_overlap=len(overlap(train_h, held_out.harmful))
            + len(overlap(train_b, held_out.harmless)),
        ),
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
    if out is None:
        return record, None
    folder = write_monitor_report(out, record, plots_enabled=plots, overwrite=overwrite)
    return record, folder


__all__ = [
    "JobPrompts",
    "check_monitor_prompts",
    "check_output",
    "compare_job",
    "fit_job",
    "monitor_job",
    "sweep_job",
]
