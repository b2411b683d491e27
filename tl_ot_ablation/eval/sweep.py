"""Generation-free sweeps: where along depth, at which ``k`` and strength, transport works.

Every point is scored by two forward passes over held-out prompts and no generation: the mean
refusal log-odds on harmful prompts (Arditi et al.'s score; lower is less refusal) and the mean
first-token KL on harmless prompts (the damage). The sweep covers single layers and adjacent
pairs across depth, ``k`` and strength at the best placement, and the strength curves of the
baselines, which together trace each method's refusal-vs-damage frontier. It also ranks layers
by the Bures-Wasserstein distance between harmful and harmless activations (mean and covariance
parts), which needs no forward pass beyond the statistics.

All maps come from one pass of statistics over every layer (``sequential=False``): a pair's
second map sees the unmodified model's activations (``sequential=True`` refits it on
transported ones at the cost of one partial pass per pair).
"""

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import Tensor
from tqdm.auto import tqdm

from ..core.ot_map import DEFAULT_REG
from ..lens.collect import check_layers
from ..lens.fit import (
    DEFAULT_N_COMPONENTS,
    collect_every_layer,
    fit_actadd,
    fit_direction_ablation,
    fit_ot_ablation,
)
from ..lens.intervention_set import InterventionSet
from .compare import _log, at_strength
from .evaluate import next_token_logprobs
from .metrics import Estimate, kl_divergence, refusal_log_odds, refusal_token_ids, with_ci
from .selection import w2_by_layer


@dataclass
class SweepSettings:
    """What ``run_sweep`` scans (recorded in ``sweep.json``).

    Attributes:
        layers: Layers to scan singly (default: all).
        pairs: Also scan adjacent pairs ``(l, l + 1)`` of those layers.
        sequential: Fit a pair's second map on activations transported by its first.
        n_components: ``k`` for the layer scan.
        k_grid: ``k`` values tried at the best placement.
        strengths: Strengths tried for each method at the best placement.
        method: The transport variant scanned ("ot" or "mean_shift").
        estimator: Covariance estimator of the maps ("ridge", "oas", "ledoit_wolf").
        gate: Gate of the maps ("none", "posterior", "hard").
        preserve_norm: Norm-preserving maps.
        direction_layer: Layer of the direction-ablation baseline (default: the middle one).
        kl_budget: "direction_ablation" (its KL) or a number: the damage allowed when picking
            the best placement.
        reg: Relative ridge on the covariances.
        positions: Fitting positions.
        batch_size: Prompts per forward pass.
        seed: Seeds the bootstrap.
        system: Optional system prompt.
    """

    layers: list[int] | None = None
    pairs: bool = True
    sequential: bool = False
    n_components: int = DEFAULT_N_COMPONENTS
    k_grid: tuple[int, ...] = (8, 16, 32, 64, 128)
    strengths: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
    method: str = "ot"
    estimator: str = "ridge"
    gate: str = "none"
    preserve_norm: bool = False
    direction_layer: int | None = None
    kl_budget: str | float = "direction_ablation"
    reg: float = DEFAULT_REG
    positions: str = "post_instruction"
    batch_size: int = 16
    seed: int = 0
    system: str | None = None


@dataclass(frozen=True)
class SweepPoint:
    """One scored configuration."""

    kind: str  # "layer", "pair", "k", "strength" or "reference"
    method: str
    layers: tuple[int, ...]
    n_components: int | None
    strength: float
    refusal_score: Estimate
    kl_harmless: Estimate
    refusal_share: Estimate | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "method": self.method,
            "layers": list(self.layers),
            "n_components": self.n_components,
            "strength": self.strength,
            "refusal_score": self.refusal_score.to_dict(),
            "kl_harmless": self.kl_harmless.to_dict(),
            "refusal_share": None if self.refusal_share is None else self.refusal_share.to_dict(),
        }


@dataclass
class SweepResult:
    """Every point, the W2 ranking, the budget and the best placement found."""

    points: list[SweepPoint]
    w2: list[dict[str, int | float]]
    budget: float
    best: SweepPoint | None
    n_layers: int
    settings: SweepSettings
    extra: dict[str, Any] = field(default_factory=dict)

    def select(self, kind: str, method: str | None = None) -> list[SweepPoint]:
        return [p for p in self.points if p.kind == kind and method in (None, p.method)]

    @property
    def sweet_spot(self) -> float | None:
        """Depth of the best placement as a fraction of the layers (its mean layer / n_layers)."""
        if self.best is None:
            return None
        return sum(self.best.layers) / len(self.best.layers) / self.n_layers

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "tl_ot_ablation.sweep/1",
            "settings": asdict(self.settings),
            "n_layers": self.n_layers,
            "kl_budget": self.budget,
            "best": None if self.best is None else self.best.to_dict(),
            "sweet_spot_depth_fraction": self.sweet_spot,
            "w2_by_layer": self.w2,
            "points": [p.to_dict() for p in self.points],
            **self.extra,
        }


@dataclass
class Scorer:
    """Scores interventions by refusal log-odds (harmful) and first-token KL (harmless)."""

    model: Any
    harmful: Sequence[str]
    harmless: Sequence[str]
    batch_size: int = 16
    system: str | None = None
    seed: int = 0
    reference: Tensor | None = None

    def __post_init__(self) -> None:
        self.refusal_ids = refusal_token_ids(self.model.tokenizer)
        self.reference = self._logprobs(self.harmless, [])

    def _logprobs(self, prompts: Sequence[str], hooks: list[tuple[str, Any]]) -> Tensor:
        return next_token_logprobs(
            self.model, prompts, fwd_hooks=hooks, batch_size=self.batch_size, system=self.system
        )

    def __call__(self, interventions: InterventionSet | None) -> tuple[Estimate, Estimate]:
        """Mean refusal log-odds (harmful) and mean KL (harmless), with CIs."""
        score, kl = self.per_prompt(interventions)
        return with_ci(score, seed=self.seed), with_ci(kl, seed=self.seed)

    def per_prompt(self, interventions: InterventionSet | None) -> tuple[Tensor, Tensor]:
        """Refusal log-odds per harmful prompt and KL per harmless prompt."""
        hooks = [] if interventions is None else interventions.fwd_hooks()
        assert self.reference is not None
        score = refusal_log_odds(self._logprobs(self.harmful, hooks), self.refusal_ids)
        kl = kl_divergence(self.reference, self._logprobs(self.harmless, hooks))
        return score, kl


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
    layers = check_layers(model, settings.layers or list(range(n_layers)))
    if settings.method not in ("ot", "mean_shift"):
        raise ValueError(f"method must be 'ot' or 'mean_shift', got {settings.method!r}")
    direction_layer = settings.direction_layer
    if direction_layer is None:
        direction_layer = n_layers // 2
    common: dict[str, Any] = {
        "positions": settings.positions,
        "batch_size": settings.batch_size,
        "system": settings.system,
        "progress": progress,
    }
    # Every placement is fitted from this one pass (rows too, for the Ledoit-Wolf estimator).
    _log(f"collecting activations at all {n_layers} layers", progress)
    training = collect_every_layer(
        model, train_harmful, train_harmless, estimator=settings.estimator, **common
    )
    common = {**common, "cached_stats": training.stats, "progress": False}
    w2 = w2_by_layer(training.stats, n_layers, n_components=settings.n_components, reg=settings.reg)
    score = Scorer(
        model, eval_harmful, eval_harmless, settings.batch_size, settings.system, settings.seed
    )
    points: list[SweepPoint] = []

    def add(
        kind: str, method: str, where: Sequence[int], k: int | None, s: float, fitted: Any
    ) -> SweepPoint:
        per_prompt_score, per_prompt_kl = score.per_prompt(fitted)
        point = SweepPoint(
            kind,
            method,
            tuple(where),
            k,
            s,
            with_ci(per_prompt_score, seed=settings.seed),
            with_ci(per_prompt_kl, seed=settings.seed),
            # Logit judge: the share of prompts whose first token is more likely than not a
            # refusal start (log-odds > 0), a generation-free refusal rate.
            with_ci((per_prompt_score > 0).double(), seed=settings.seed),
        )
        points.append(point)
        return point

    def transport(where: Sequence[int], k: int, method: str | None = None) -> InterventionSet:
        return fit_ot_ablation(
            model,
            train_harmful,
            train_harmless,
            layers=list(where),
            n_components=k,
            reg=settings.reg,
            method=method or settings.method,  # type: ignore[arg-type]
            sequential=settings.sequential and len(where) > 1,
            estimator=settings.estimator,  # type: ignore[arg-type]
            gate=settings.gate,  # type: ignore[arg-type]
            preserve_norm=settings.preserve_norm,
            cached_rows=training.rows,
            **common,
        )

    _log("scoring the unmodified model and direction ablation", progress)
    add("reference", "none", (), None, 0.0, None)
    ablation = fit_direction_ablation(
        model, train_harmful, train_harmless, layer=direction_layer, **common
    )
    da_point = add("reference", "direction_ablation", (direction_layer,), None, 1.0, ablation)
    budget = (
        da_point.kl_harmless.value
        if settings.kl_budget == "direction_ablation"
        else float(settings.kl_budget)
    )
    k = settings.n_components
    placements: list[tuple[int, ...]] = [(layer,) for layer in layers]
    if settings.pairs:
        placements += [(a, b) for a, b in itertools.pairwise(layers) if b == a + 1]
    for where in tqdm(placements, desc="layers", disable=not progress):
        kind = "layer" if len(where) == 1 else "pair"
        add(kind, settings.method, where, k, 1.0, transport(where, k))

    candidates = [p for p in points if p.kind in ("layer", "pair")]
    within = [p for p in candidates if p.kl_harmless.value <= budget]
    best = min(within, key=lambda p: p.refusal_score.value) if within else None
    anchor = best or min(candidates, key=lambda p: p.kl_harmless.value)
    for k_value in tqdm(settings.k_grid, desc="k", disable=not progress):
        add("k", settings.method, anchor.layers, k_value, 1.0, transport(anchor.layers, k_value))
    anchor_layer = anchor.layers[0]
    curves = {
        settings.method: transport(anchor.layers, k),
        "mean_shift" if settings.method == "ot" else "ot": transport(
            anchor.layers, k, "mean_shift" if settings.method == "ot" else "ot"
        ),
        "direction_ablation": ablation,
        "actadd": fit_actadd(model, train_harmful, train_harmless, layer=anchor_layer, **common),
    }
    placement = {"direction_ablation": (direction_layer,), "actadd": (anchor_layer,)}
    for method, fitted in tqdm(curves.items(), desc="strength curves", disable=not progress):
        where = placement.get(method, anchor.layers)
        k_used = k if method in ("ot", "mean_shift") else None
        for s in settings.strengths:
            add("strength", method, where, k_used, s, at_strength(fitted, s))
    return SweepResult(points, w2, budget, best, n_layers, settings)


__all__ = ["Scorer", "SweepPoint", "SweepResult", "SweepSettings", "run_sweep", "w2_by_layer"]
