"""The unmodified model's outputs, kept on disk between runs: ``compare`` pays for them once.

Every ``compare`` on the same model and prompts decodes the same unmodified completions: the
validation reference (first-token log-probabilities on the validation harmless prompts), the
judged validation harmful completions, and the whole held-out evaluation of ``"none"``
(completions, first steps, perplexities, questions, over-refusal and the monitor's scores of
those passes). Here they are read from and written to an ``io.result_cache.ResultCache``,
keyed by everything they depend on:

- the model's weights hash (``lens.weights``), its device type and chat template, and the
  package version with the shipped judge head's hash;
- the prompts themselves (every held-out set, the texts, the questions, the XSTest set);
- the settings that reach these outputs (tokens, batch size, system prompt, judge, judge
  tokens, seed, KL threshold), and the monitor's fingerprint when one watches the passes.

So a second run that changes the methods, the layers or the strengths reads the unmodified
outputs back; one that changes any input above computes them again. Only the built-in judges
are cached (a registered or hub judge's labels could change without its name changing).
"""

import dataclasses
from functools import cache as once
from importlib import metadata, resources
from typing import Any

import torch

from ..io.manifest import sha256_file
from ..io.result_cache import CachedResult, ResultCache
from ..lens.collect import model_device
from ..lens.monitor import ActivationMonitor
from ..lens.weights import weights_sha256
from .choices import Validation, validation_reference
from .held_out import MethodResult, Reference, evaluate_method
from .judge import HEAD_FILE, JUDGES
from .metrics import Estimate
from .prompt_sets import EvalPrompts, ValidationPrompts
from .settings import CompareSettings


def cacheable(cache: ResultCache | None, settings: CompareSettings) -> bool:
    """Whether ``cache`` is on and the judge's labels are fixed by its name."""
    return cache is not None and cache.enabled and settings.judge in JUDGES


@once
def code_version() -> str:
    """The installed package's version and the shipped judge head's SHA-256 (a retrained head
    changes the labels without changing the version)."""
    head = resources.files("tl_ot_ablation.data") / HEAD_FILE
    with resources.as_file(head) as path:
        return f"{metadata.version('tl-ot-ablation')}+judge-{sha256_file(path)[:16]}"


def _inputs(model: Any, what: str, settings: CompareSettings, **parts: Any) -> dict[str, Any]:
    collect = settings.collect
    return {
        "what": what,
        "package": code_version(),
        "model": weights_sha256(model),
        "device": model_device(model).type,  # other hardware rounds differently
        "chat_template": getattr(model.tokenizer, "chat_template", None),
        "tokens": settings.max_new_tokens,
        "batch_size": collect.batch_size,
        "system": collect.system,
        "judge": settings.judge,
        "early_stop": settings.early_stop,  # the validation passes' batches
        **parts,
    }


def reference_inputs(model: Any, prompts: ValidationPrompts, settings: CompareSettings) -> dict:
    """Cache key inputs of the validation reference (first steps on the harmless prompts)."""
    return _inputs(model, "validation-reference", settings, harmless=list(prompts.harmless))


def labels_inputs(model: Any, harmful: list[str], settings: CompareSettings) -> dict:
    """Cache key inputs of the unmodified model's judged labels on ``harmful``."""
    return _inputs(model, "unmodified-labels", settings, harmful=harmful)


def monitor_fingerprint(monitor: ActivationMonitor | None) -> str | None:
    """What the monitor scores with: its per-layer fits, probes, hook and span."""
    if monitor is None:
        return None
    parts: list[Any] = [monitor.hook, monitor.n_post_instruction, repr(monitor.collect)]
    parts += [(layer, fit.fingerprint()) for layer, fit in sorted(monitor.monitors.items())]
    parts += [(layer, probe.fingerprint()) for layer, probe in sorted(monitor.probes.items())]
    return repr(parts)


def evaluation_inputs(
    model: Any,
    prompts: EvalPrompts,
    settings: CompareSettings,
    monitor: ActivationMonitor | None,
) -> dict:
    """Cache key inputs of the unmodified model's held-out evaluation."""
    xstest = prompts.xstest
    return _inputs(
        model,
        "unmodified-evaluation",
        settings,
        harmful=prompts.harmful,
        harmless=prompts.harmless,
        texts=prompts.texts,
        questions=[dataclasses.asdict(question) for question in prompts.questions],
        xstest=None if xstest is None else dataclasses.asdict(xstest),
        judge_tokens=settings.judge_tokens,
        seed=settings.seed,
        kl_threshold=settings.kl_threshold,
        monitor=monitor_fingerprint(monitor),
    )


def _to_cache(result: MethodResult, reference: Reference) -> tuple[dict, dict]:
    value = {
        "metrics": {name: estimate.to_dict() for name, estimate in result.metrics.items()},
        "completions": result.completions,
        "refused_harmful": result.refused_harmful,
        "judged_harmful": result.judged_harmful,
        "judged_harmless": result.judged_harmless,
        "judged_xstest": result.judged_xstest,
        "kl_harmless": result.kl_harmless,
        "reference": {
            "harmless_completions": reference.harmless_completions,
            "harmless_labels": reference.harmless_labels,
            "xstest_labels": reference.xstest_labels,
        },
    }
    tensors = {"reference.harmless_logprobs": reference.harmless_logprobs}
    for kind, scores in result.monitor_scores.items():
        tensors |= {f"monitor.{kind}.{score}": values for score, values in scores.items()}
    return value, tensors


def _from_cache(found: CachedResult, settings: CompareSettings) -> tuple[MethodResult, Reference]:
    value, tensors = found.meta, found.tensors
    scores: dict[str, dict[str, torch.Tensor]] = {}
    for key, values in tensors.items():
        if key.startswith("monitor."):
            _, kind, score = key.split(".", 2)
            scores.setdefault(kind, {})[score] = values
    result = MethodResult(
        "none",
        None,
        {name: Estimate(**estimate) for name, estimate in value["metrics"].items()},
        value["completions"],
        refused_harmful=value["refused_harmful"],
        judged_harmful=value["judged_harmful"],
        monitor_scores=scores,
        kl_harmless=value["kl_harmless"],
        judged_harmless=value["judged_harmless"],
        judged_xstest=value["judged_xstest"],
        seed=settings.seed,
    )
    saved = value["reference"]
    reference = Reference(
        tensors["reference.harmless_logprobs"],
        saved["harmless_completions"],
        saved["harmless_labels"],
        saved["xstest_labels"],
    )
    return result, reference


def unmodified_evaluation(
    model: Any,
    prompts: EvalPrompts,
    settings: CompareSettings,
    *,
    monitor: ActivationMonitor | None,
    cache: ResultCache | None,
    progress: bool,
) -> tuple[MethodResult, Reference]:
    """``held_out.evaluate_method`` of the unmodified model, read from ``cache`` when an
    earlier run stored it (``seconds["evaluate"]`` is then 0 and ``seconds["cached"]`` 1)."""

    def run() -> tuple[MethodResult, Reference]:
        return evaluate_method(
            model, "none", None, prompts, settings, None, monitor=monitor, progress=progress
        )

    if cache is None or not cacheable(cache, settings):
        return run()
    inputs = evaluation_inputs(model, prompts, settings, monitor)
    found = cache.get(inputs)
    if found is not None:
        result, reference = _from_cache(found, settings)
        result.seconds = {"evaluate": 0.0, "cached": 1.0}
        return result, reference
    result, reference = run()
    cache.put(inputs, *_to_cache(result, reference))
    return result, reference


def cached_validation(
    model: Any, prompts: ValidationPrompts, settings: CompareSettings, cache: ResultCache | None
) -> Validation:
    """``choices.validation_reference``, its log-probabilities read from ``cache`` when
    stored."""
    if cache is None or not cacheable(cache, settings):
        return validation_reference(model, prompts, settings)
    found = cache.get_or_compute(
        reference_inputs(model, prompts, settings),
        lambda: (
            {},
            {"logprobs": validation_reference(model, prompts, settings).harmless_logprobs},
        ),
    )
    return Validation(prompts, found.tensors["logprobs"])


def unmodified_labels(
    model: Any, validation: Validation, settings: CompareSettings, cache: ResultCache | None
) -> list[str | None]:
    """The judge's labels of the unmodified model's validation harmful completions
    (``Validation.labels`` of no edit: every prompt judged), read from ``cache`` when
    stored."""
    if cache is None or not cacheable(cache, settings):
        return validation.labels(model, None, settings)
    found = cache.get_or_compute(
        labels_inputs(model, list(validation.prompts.harmful), settings),
        lambda: ({"labels": validation.labels(model, None, settings)}, {}),
    )
    return list(found.meta["labels"])
