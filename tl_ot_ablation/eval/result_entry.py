"""A method's held-out evaluation as a result-cache entry, and back, exactly.

``held_out.evaluate_method`` returns a ``MethodResult`` (and, for the unmodified model, the
``Reference`` every other method is compared with). ``to_entry`` splits what that evaluation
measured into JSON (metrics, completions, labels, per-prompt KLs) and tensors (the monitor's
per-prompt scores, a gated map's recorded posteriors and coordinates, the reference's
first-step log-probabilities); ``from_entry`` rebuilds the same result from them and from the
edit it was measured with (its strength, fit metadata and gate map come from the set itself,
not the entry). What ``compare`` adds afterwards (the strength choice, the seconds,
detectability, harm scores, the gate's nearest training prompts) is not stored: a read-back
result gets it exactly as a fresh one does.
"""

from typing import Any

from torch import Tensor

from ..io.result_cache import CachedResult
from ..lens.intervention_set import InterventionSet
from .gate_report import GateRecorder
from .held_out import MethodResult, Reference
from .metrics import Estimate
from .settings import CompareSettings

GATE_VALUES = ("last", "max", "z")
"""What ``GateRecorder`` logs per prompt set (``GateRecorder.values``)."""


def to_entry(result: MethodResult, reference: Reference | None) -> tuple[dict, dict[str, Tensor]]:
    """The JSON part and the tensors of ``result`` (with ``reference`` when it is the
    unmodified model's, measured in the same evaluation)."""
    value: dict[str, Any] = {
        "metrics": {name: estimate.to_dict() for name, estimate in result.metrics.items()},
        "completions": result.completions,
        "refused_harmful": result.refused_harmful,
        "judged_harmful": result.judged_harmful,
        "judged_harmless": result.judged_harmless,
        "judged_xstest": result.judged_xstest,
        "kl_harmless": result.kl_harmless,
        "gate": None if result.gate is None else list(result.gate.logs),
        "reference": None,
    }
    tensors: dict[str, Tensor] = {}
    for kind, scores in result.monitor_scores.items():
        tensors |= {f"monitor.{kind}.{score}": values for score, values in scores.items()}
    if result.gate is not None:
        for kind in result.gate.logs:
            for what in GATE_VALUES:
                values = result.gate.values(kind, what)
                if values.numel():
                    tensors[f"gate.{kind}.{what}"] = values
    if reference is not None:
        value["reference"] = {
            "harmless_completions": reference.harmless_completions,
            "harmless_labels": reference.harmless_labels,
            "xstest_labels": reference.xstest_labels,
        }
        tensors["reference.harmless_logprobs"] = reference.harmless_logprobs
    return value, tensors


def from_entry(
    found: CachedResult,
    name: str,
    interventions: InterventionSet | None,
    settings: CompareSettings,
) -> tuple[MethodResult, Reference | None]:
    """The result ``to_entry`` stored, for ``name`` measured with ``interventions`` (the same
    set: the entry is keyed by its fingerprint), and the reference stored with it, if any."""
    value, tensors = found.meta, found.tensors
    scores: dict[str, dict[str, Tensor]] = {}
    for key, values in tensors.items():
        if key.startswith("monitor."):
            _, kind, score = key.split(".", 2)
            scores.setdefault(kind, {})[score] = values
    result = MethodResult(
        name,
        None if interventions is None else interventions.strength,
        {metric: Estimate(**estimate) for metric, estimate in value["metrics"].items()},
        value["completions"],
        fit={} if interventions is None else dict(interventions.metadata),
        refused_harmful=value["refused_harmful"],
        judged_harmful=value["judged_harmful"],
        monitor_scores=scores,
        kl_harmless=value["kl_harmless"],
        judged_harmless=value["judged_harmless"],
        judged_xstest=value["judged_xstest"],
        gate=_gate(value.get("gate"), tensors, interventions),
        seed=settings.seed,
    )
    saved = value["reference"]
    if saved is None:
        return result, None
    reference = Reference(
        tensors["reference.harmless_logprobs"],
        saved["harmless_completions"],
        saved["harmless_labels"],
        saved["xstest_labels"],
    )
    return result, reference


def _gate(
    kinds: list[str] | None, tensors: dict[str, Tensor], interventions: InterventionSet | None
) -> GateRecorder | None:
    """The set's ``GateRecorder`` holding the recorded values (``None``: no gate)."""
    gate = GateRecorder.for_set(interventions)
    if (gate is None) != (kinds is None):
        raise ValueError("the entry's gate does not match the set's")
    if gate is None or kinds is None:
        return None
    for kind in kinds:
        gate.logs[kind] = {
            what: _chunks(tensors.get(f"gate.{kind}.{what}")) for what in GATE_VALUES
        }
    return gate


def _chunks(values: Tensor | None) -> list[Tensor]:
    return [] if values is None else [values]
