"""``compare``'s outputs kept on disk between runs: a second run pays only for what changed.

A second ``compare`` on the same model and prompts, say with one more method, decodes mostly
what the first did: the unmodified model's outputs, then for every method it shares with the
first run the same layer search, strength searches and held-out evaluation. Here they are read
from and written to an ``io.result_cache.ResultCache``:

- the validation reference (the unmodified model's first-token log-probabilities on the
  validation harmless prompts, ``cached_validation``);
- every validation measurement (``validation.Validation``: an edit's KL, judged labels, early
  stops included, and refusal log-odds), through ``StoredMeasurements``;
- every method's held-out evaluation (``cached_evaluation``; the unmodified model's with its
  ``Reference``): completions, judged labels, metrics, per-prompt KLs, the monitor's scores
  and a gated map's recorded gate (``result_entry``).

Each is keyed by everything it depends on: the model's weights hash (``lens.weights``), its
device type and chat template, the package version with the shipped judge head's hash
(``code_version``), the prompts it was measured on, the settings that reach it, and for an
edit its ``InterventionSet.fingerprint()`` (SHA-256 of its tensors and options: equal sets,
equal keys; a set without one is never cached). A validation KL is keyed by the reference it
is measured from, a held-out evaluation by the unmodified model's outputs it is compared with
(``reference_fingerprint``) and the monitor watching it (``monitor_fingerprint``). A change in
any input is a miss, never a stale hit. Only the built-in judges are cached (a registered or
hub judge's labels could change without its name changing).

Not cached: the training activations (``fitting.collect_training_activations``) and the fits.
At the embedded model's scale (28 layers, d_model 1536, 256 + 256 training prompts) their
statistics alone are 1.0 GiB (two float64 1536² scatter matrices per layer) and the rows kept
for Ledoit-Wolf another 0.4 GiB (5 post-instruction tokens a prompt, float32): more than half
the cache's bound, to save one forward pass per training prompt (4.5 of the default run's
28 minutes). The fits are quick, and their fingerprints (deterministic: equal across fresh
fits) key everything above.
"""

import dataclasses
import hashlib
import json
import warnings
from dataclasses import dataclass
from functools import cache as once
from importlib import metadata, resources
from typing import Any

from ..core.tensor_dataclass import update_digest
from ..io.manifest import sha256_file
from ..io.result_cache import ResultCache
from ..lens.collect import model_device
from ..lens.intervention_set import InterventionSet
from ..lens.monitor import ActivationMonitor
from ..lens.weights import weights_sha256
from .held_out import MethodResult, Reference, evaluate_method
from .judge import HEAD_FILE, JUDGES
from .judge_reader import PROBE_FILE
from .prompt_sets import EvalPrompts, ValidationPrompts
from .result_entry import from_entry, to_entry
from .settings import CompareSettings
from .validation import MemoKey, Validation, validation_reference

UNMODIFIED = "unmodified"
"""The fingerprint that stands for no edit."""


def cacheable(cache: ResultCache | None, settings: CompareSettings) -> bool:
    """Whether ``cache`` is on and the judge's labels are fixed by its name."""
    return cache is not None and cache.enabled and settings.judge in JUDGES


@once
def code_version() -> str:
    """The installed package's version and the SHA-256 of the shipped judge head and reader
    probe (a retrained one changes the labels without changing the version)."""
    digests = []
    for name in (HEAD_FILE, PROBE_FILE):
        with resources.as_file(resources.files("tl_ot_ablation.data") / name) as path:
            digests.append(sha256_file(path)[:16])
    return f"{metadata.version('tl-ot-ablation')}+judge-{'-'.join(digests)}"


def _model_inputs(model: Any) -> dict[str, Any]:
    """What every entry depends on: the code, the weights, the hardware and the template."""
    return {
        "package": code_version(),
        "model": weights_sha256(model),
        "device": model_device(model).type,  # other hardware rounds differently
        "chat_template": getattr(model.tokenizer, "chat_template", None),
    }


def _inputs(model: Any, what: str, settings: CompareSettings, **parts: Any) -> dict[str, Any]:
    collect = settings.collect
    return {
        "what": what,
        **_model_inputs(model),
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


def monitor_fingerprint(monitor: ActivationMonitor | None) -> str | None:
    """What the monitor scores with: its per-layer fits, probes, hook and span."""
    if monitor is None:
        return None
    collect = dataclasses.replace(monitor.collect, progress=False)  # bars change no score
    parts: list[Any] = [monitor.hook, monitor.n_post_instruction, repr(collect)]
    parts += [(layer, fit.fingerprint()) for layer, fit in sorted(monitor.monitors.items())]
    parts += [(layer, probe.fingerprint()) for layer, probe in sorted(monitor.probes.items())]
    return repr(parts)


def reference_fingerprint(reference: Reference) -> str:
    """Hex SHA-256 of the unmodified model's held-out outputs a method is compared with."""
    digest = hashlib.sha256()
    update_digest(digest, reference.harmless_logprobs)
    labels = [reference.harmless_completions, reference.harmless_labels, reference.xstest_labels]
    digest.update(json.dumps(labels).encode())
    return digest.hexdigest()


def evaluation_inputs(
    model: Any,
    prompts: EvalPrompts,
    settings: CompareSettings,
    monitor: ActivationMonitor | None,
    *,
    method: tuple[str, str, Reference | None] | None = None,
) -> dict:
    """Cache key inputs of a held-out evaluation: the unmodified model's, or with ``method``
    (its name, its set's fingerprint and the reference it is compared with) an edited one's."""
    xstest = prompts.xstest
    edited = {}
    if method is not None:
        name, fingerprint, reference = method
        compared = None if reference is None else reference_fingerprint(reference)
        edited = {"method": name, "edit": fingerprint, "reference": compared}
    return _inputs(
        model,
        "unmodified-evaluation" if method is None else "held-out-evaluation",
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
        **edited,
    )


def cached_evaluation(
    model: Any,
    name: str,
    interventions: InterventionSet | None,
    prompts: EvalPrompts,
    settings: CompareSettings,
    reference: Reference | None,
    *,
    monitor: ActivationMonitor | None,
    cache: ResultCache | None,
    progress: bool,
) -> tuple[MethodResult, Reference]:
    """``held_out.evaluate_method``, read from ``cache`` when an earlier run stored it (its
    ``seconds`` are then ``{"evaluate": 0.0, "cached": 1.0}``). The unmodified model
    (``interventions=None``, ``reference=None``) is stored with the reference it measures; an
    edit is keyed by the reference it is compared with."""

    def run() -> tuple[MethodResult, Reference]:
        return evaluate_method(
            model,
            name,
            interventions,
            prompts,
            settings,
            reference,
            monitor=monitor,
            progress=progress,
        )

    fingerprint = UNMODIFIED if interventions is None else interventions.fingerprint()
    if fingerprint is None or cache is None or not cacheable(cache, settings):
        return run()
    unmodified = interventions is None and reference is None
    method = None if unmodified else (name, fingerprint, reference)
    inputs = evaluation_inputs(model, prompts, settings, monitor, method=method)
    found = cache.get(inputs)
    if found is not None:
        try:
            result, stored = from_entry(found, name, interventions, settings)
        except (KeyError, TypeError, ValueError) as err:  # written by other code: recompute
            stored, result = None, None
            warnings.warn(
                f"result cache: unreadable entry for {name} ({err!r}); recomputing",
                UserWarning,
                stacklevel=2,
            )
        kept = reference if reference is not None else stored
        if result is not None and kept is not None:
            result.seconds = {"evaluate": 0.0, "cached": 1.0}
            return result, kept
    result, measured = run()
    cache.put(inputs, *to_entry(result, measured if reference is None else None))
    return result, measured


@dataclass
class StoredMeasurements:
    """``validation.MeasurementStore`` in the result cache: a validation measurement keyed by
    its memo key (what, the edit's fingerprint, the settings it depends on), the model
    (``_model_inputs``) and the prompts it was made on (the harmless prompts and the
    reference's hash for a KL, the harmful prompts for labels and refusal odds)."""

    cache: ResultCache
    model: dict[str, Any]
    harmless: dict[str, Any]
    harmful: dict[str, Any]

    @classmethod
    def of(cls, cache: ResultCache, model: Any, validation: Validation) -> "StoredMeasurements":
        digest = hashlib.sha256()
        update_digest(digest, validation.harmless_logprobs)
        harmless = {"harmless": list(validation.prompts.harmless), "reference": digest.hexdigest()}
        harmful = {"harmful": list(validation.prompts.harmful)}
        return cls(cache, _model_inputs(model), harmless, harmful)

    def _inputs(self, key: MemoKey) -> dict[str, Any]:
        prompts = self.harmless if key[0] == "kl" else self.harmful
        return {"what": "validation-measurement", **self.model, "key": list(key), **prompts}

    def get(self, key: MemoKey) -> Any | None:
        found = self.cache.get(self._inputs(key))
        return None if found is None else found.meta.get("measured")

    def put(self, key: MemoKey, value: Any) -> None:
        self.cache.put(self._inputs(key), {"measured": value}, {}, replace=True)


def cached_validation(
    model: Any, prompts: ValidationPrompts, settings: CompareSettings, cache: ResultCache | None
) -> Validation:
    """``validation.validation_reference``, its log-probabilities read from ``cache`` when
    stored, and its measurements read from and stored in ``cache`` (``StoredMeasurements``)."""
    if not cacheable(cache, settings):
        return validation_reference(model, prompts, settings)
    assert cache is not None
    found = cache.get_or_compute(
        reference_inputs(model, prompts, settings),
        lambda: (
            {},
            {"logprobs": validation_reference(model, prompts, settings).harmless_logprobs},
        ),
    )
    validation = Validation(prompts, found.tensors["logprobs"])
    validation.store = StoredMeasurements.of(cache, model, validation)
    return validation
