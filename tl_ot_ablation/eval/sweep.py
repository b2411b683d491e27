"""Sweeps: where along depth, at which ``k`` and strength, transport works.

Every point is scored by two forward passes over held-out prompts and no generation: the mean
refusal log-odds on harmful prompts (Arditi et al.'s score; lower is less refusal) and the mean
first-token KL on harmless prompts (the damage). The sweep covers single layers and adjacent
pairs across depth, ``k`` and strength at the best placement, and the strength curves of the
baselines, which together trace each method's refusal-vs-damage frontier. It also ranks layers
by the Bures-Wasserstein distance between harmful and harmless activations (mean and covariance
parts), which needs no forward pass beyond the statistics.

The log-odds read only the first token, which a deflection ("it is not possible to ...") passes
as easily as an answer. A *judged* sweep (``SweepSettings.judged``) therefore also generates
greedy completions of the harmful prompts at the references and every placement, labels them
with the compliance judge, and picks the best placement by judged compliance within the budget;
its refusal log-odds come from the same generation pass (its first step), so it costs one
generation pass per placement and no extra forward pass. Like the log-odds pick, the judged pick
is made and scored on the same held-out prompts: an exploratory map of depth, whose best share
is optimistic (``compare --layers judged`` chooses on a validation split instead).

All maps come from one pass of statistics over every layer (``sequential=False``): a pair's
second map sees the unmodified model's activations (``sequential=True`` refits it on
transported ones at the cost of one partial pass per pair).
"""

import dataclasses
import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from ..core.ot_map import IdenticalClassesError
from ..lens.intervention_set import InterventionSet
from .common import at_strength, log
from .fitting import collect_training_activations
from .methods import FitContext, fit_method
from .record import SweepPoint, SweepRecord
from .selection import w2_by_layer
from .settings import SweepSettings
from .sweep_scorer import Scorer, best_placement, point_damage

JUDGED_KINDS = ("reference", "layer", "pair")
"""The points a judged sweep generates at (``k`` and strength points stay generation-free)."""


@dataclass
class SweepResult:
    """Every point, the W2 ranking, the budget and the best placement found; a judged sweep
    also keeps the harmful completions of each judged point (``completions``: point index ->
    texts, in the order of the harmful prompts ``harmful``)."""

    points: list[SweepPoint]
    w2: list[dict[str, int | float]]
    budget: float
    best: SweepPoint | None
    n_layers: int
    settings: SweepSettings
    extra: dict[str, Any] = field(default_factory=dict)
    completions: dict[int, list[str]] = field(default_factory=dict)
    harmful: list[str] = field(default_factory=list)

    def select(self, kind: str, method: str | None = None) -> list[SweepPoint]:
        """The points of one ``kind`` (and ``method``, if given)."""
        return [p for p in self.points if p.kind == kind and method in (None, p.method)]

    @property
    def sweet_spot(self) -> float | None:
        """Depth of the best placement as a fraction of the layers (its mean layer / n_layers)."""
        return self.to_record().sweet_spot_depth_fraction

    def to_record(self, *, model: str | None = None, command: str | None = None) -> SweepRecord:
        """The typed ``sweep.json`` record."""
        return SweepRecord(
            self.settings,
            self.n_layers,
            self.budget,
            self.best,
            self.w2,
            self.points,
            model,
            command,
        )

    def to_dict(self) -> dict[str, Any]:
        return self.to_record().to_json()

    def completions_json(self) -> dict[str, Any]:
        """The judged points' harmful completions, for ``completions.json`` (read them before
        trusting a judged share)."""
        return {
            "harmful_prompts": self.harmful,
            "points": [
                {
                    "index": index,
                    "kind": self.points[index].kind,
                    "method": self.points[index].method,
                    "layers": list(self.points[index].layers),
                    "strength": self.points[index].strength,
                    "completions": texts,
                }
                for index, texts in sorted(self.completions.items())
            ],
        }


@dataclass
class _Sweeper:
    """The fitting context and scorer of one sweep, and the points scored so far."""

    context: FitContext
    scorer: Scorer
    settings: SweepSettings
    progress: bool
    points: list[SweepPoint] = field(default_factory=list)
    completions: dict[int, list[str]] = field(default_factory=dict)

    def add(
        self, kind: str, method: str, where: Sequence[int], k: int | None, s: float, fitted: Any
    ) -> SweepPoint:
        judged = self.settings.judged and kind in JUDGED_KINDS
        point, said = self.scorer.point(kind, method, where, k, s, fitted, judged=judged)
        if said is not None:
            self.completions[len(self.points)] = said
        self.points.append(point)
        return point

    def fit(self, method: str, where: Sequence[int], k: int | None = None) -> InterventionSet:
        """``method`` at the layers ``where`` (with ``k`` components for transport methods)."""
        spec = self.context.spec
        context = dataclasses.replace(
            self.context,
            layers=list(where),
            sequential=self.settings.sequential and len(where) > 1,
            spec=spec if k is None else dataclasses.replace(spec, n_components=k),
        )
        return fit_method(method, context)

    def placements(self, layers: list[int]) -> None:
        placements: list[tuple[int, ...]] = [(layer,) for layer in layers]
        if self.settings.pairs:
            placements += [(a, b) for a, b in itertools.pairwise(layers) if b == a + 1]
        k = self.settings.map.n_components
        identical = []
        for where in tqdm(placements, desc="layers", disable=not self.progress):
            try:
                fitted = self.fit(self.settings.method, where, k)
            except IdenticalClassesError:  # e.g. layer 0 of a rotary model: nothing to place
                identical.append(where)
                continue
            self.add(
                "layer" if len(where) == 1 else "pair", self.settings.method, where, k, 1.0, fitted
            )
        if identical:
            warnings.warn(
                f"WARNING: no {self.settings.method} point at {identical}: the harmful and "
                "harmless activations are identical there (W2 = 0), so a map changes nothing",
                stacklevel=2,
            )

    def strength_curves(
        self, anchor: SweepPoint, ablation: InterventionSet, direction_layer: int
    ) -> None:
        method, k = self.settings.method, self.settings.map.n_components
        other = "mean_shift" if method == "ot_selective" else "ot_selective"
        curves = {
            method: (self.fit(method, anchor.layers, k), anchor.layers, k),
            other: (self.fit(other, anchor.layers, k), anchor.layers, k),
            "direction_ablation": (ablation, (direction_layer,), None),
            "actadd": (self.fit("actadd", anchor.layers[:1]), anchor.layers[:1], None),
        }
        for name, (fitted, where, k_used) in tqdm(
            curves.items(), desc="strength curves", disable=not self.progress
        ):
            for s in self.settings.strengths:
                self.add("strength", name, where, k_used, s, at_strength(fitted, s))


def run_sweep(
    model: Any,
    train_harmful: Sequence[str],
    train_harmless: Sequence[str],
    eval_harmful: Sequence[str],
    eval_harmless: Sequence[str],
    settings: SweepSettings | None = None,
    *,
    progress: bool = True,
) -> SweepResult:
    """Scan layers, pairs, ``k`` and strength (see the module docstring)."""
    settings = settings or SweepSettings()
    n_layers = model.cfg.n_layers
    layers = settings.scanned_layers(n_layers)
    direction_layer = settings.direction(n_layers)
    collect = settings.collecting(progress=False)
    # Every placement is fitted from this one pass (rows too, for the Ledoit-Wolf estimator:
    # every swept method is a transport method).
    training = collect_training_activations(
        model, train_harmful, train_harmless, settings, [settings.method], progress=progress
    )
    spec = settings.map
    w2 = w2_by_layer(training.stats, n_layers, n_components=spec.n_components, reg=spec.reg)
    sweeper = _Sweeper(
        FitContext(
            model,
            train_harmful,
            train_harmless,
            layers,
            direction_layer,
            settings.map,
            collect,
            settings.sequential,
            training,
        ),
        Scorer(
            model,
            eval_harmful,
            eval_harmless,
            settings.collect.batch_size,
            settings.collect.system,
            settings.seed,
            max_new_tokens=settings.max_new_tokens,
            judge_method=settings.judge,
            kl_threshold=settings.kl_threshold,
        ),
        settings,
        progress,
    )
    if settings.judged:
        log("judging greedy completions at the references and every placement", progress)
    log("scoring the unmodified model and direction ablation", progress)
    sweeper.add("reference", "none", (), None, 0.0, None)
    ablation = fit_method("direction_ablation", sweeper.context)
    da_point = sweeper.add(
        "reference", "direction_ablation", (direction_layer,), None, 1.0, ablation
    )
    budget = (
        point_damage(da_point, settings.match_measure)
        if settings.kl_budget == "direction_ablation"
        else float(settings.kl_budget)
    )
    sweeper.placements(layers)
    candidates = [p for p in sweeper.points if p.kind in ("layer", "pair")]
    best = best_placement(candidates, budget, settings.match_measure)
    anchor = best or min(candidates, key=lambda p: point_damage(p, settings.match_measure))
    for k_value in tqdm(settings.k_grid, desc="k", disable=not progress):
        fitted = sweeper.fit(settings.method, anchor.layers, k_value)
        sweeper.add("k", settings.method, anchor.layers, k_value, 1.0, fitted)
    sweeper.strength_curves(anchor, ablation, direction_layer)
    return SweepResult(
        sweeper.points,
        w2,
        budget,
        best,
        n_layers,
        settings,
        completions=sweeper.completions,
        harmful=list(eval_harmful),
    )


__all__ = [
    "JUDGED_KINDS",
    "Scorer",
    "SweepPoint",
    "SweepResult",
    "SweepSettings",
    "best_placement",
    "run_sweep",
    "w2_by_layer",
]
