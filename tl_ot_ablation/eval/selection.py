"""Choose the map's settings from training data alone: ``k`` and the covariance estimator by
held-out likelihood, the layer by the distance between the two classes.

The transport map is only as good as its two Gaussians. For each candidate ``k`` (a PCA basis
of the pooled training rows) and estimator, fit the harmful and harmless Gaussians on training
rows and score the mean log-density of held-out rows. To compare different ``k`` fairly, the
density is over the full ``d`` dimensions: the fitted Gaussian inside the subspace times an
isotropic Gaussian with the training residual variance outside it (as in probabilistic PCA).
Larger ``k`` keeps more structure but estimates more parameters from the same rows, so the
score peaks; shrinkage moves that peak to larger ``k``.

Layers are ranked by the scale-free squared Bures-Wasserstein distance between the harmful
and harmless Gaussians (W2² over the classes' mean total variance): the raw distance grows with
the residual stream's norm, the ratio says where the two classes are most apart relative to
their spread. On the embedded model it peaks at layer 23, next to the layer where the sweep over
held-out prompts found the gated map best (22; README, "Where transport works").

That distance ranks where the classes differ, not where an edit changes what the model *says*:
on the same model the gated map at layer 23 removes the refusal words best but leaves the model
deflecting on a quarter of real requests, and the judged compliance of the layers does not
follow the W2 ranking (README, "On real prompts"). So ``compare`` can also choose the layer by
what the judge reads (``layers="judged"``): ``judged_candidates`` lists the layers it tries,
``best_trial`` picks among them.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.errors import UserInputError
from ..core.gate import gaussian_log_density
from ..core.ot_fit import DEFAULT_REG
from ..core.ot_map import GaussianOTMap, IdenticalClassesError
from ..core.pca import PCABasis
from ..core.shrinkage import ESTIMATORS, estimate_cov
from ..core.stats import GaussianStats
from ..lens.collect import CollectOptions, Prompts, check_layers, hook_name
from ..lens.fit import check_distinct_prompts
from ..lens.map_spec import DEFAULT_N_COMPONENTS
from ..lens.training import (
    StatsPair,
    TrainingActivations,
    collect_every_layer,
    training_fingerprint,
)


@dataclass(frozen=True)
class LikelihoodScore:
    """Mean held-out log-density per row (nats), both classes averaged."""

    n_components: int
    estimator: str
    log_likelihood: float


def _class_log_likelihood(
    train: Tensor, held_out: Tensor, basis: PCABasis, estimator: str, reg: float
) -> float:
    z_train, z_held = basis.project(train), basis.project(held_out)
    stats = GaussianStats.from_rows(z_train)
    cov = estimate_cov(stats, z_train, estimator, reg)
    inside = gaussian_log_density(z_held, stats.mean, torch.linalg.cholesky(cov))
    # The discarded directions: an isotropic Gaussian with the training residual variance.
    d, k = train.shape[-1], basis.n_components
    if d == k:
        return float(inside.mean())
    train_residual = train - basis.reconstruct(z_train)
    held_residual = held_out - basis.reconstruct(z_held)
    var = train_residual.square().sum(-1).mean() / (d - k)
    outside = -0.5 * held_residual.square().sum(-1) / var - 0.5 * (d - k) * torch.log(
        2 * math.pi * var
    )
    return float((inside + outside).mean())


def heldout_log_likelihood(
    source: Float[Tensor, "n d"],
    target: Float[Tensor, "m d"],
    *,
    n_components: Sequence[int],
    estimators: Sequence[str] = ESTIMATORS,
    held_out_fraction: float = 0.25,
    reg: float = DEFAULT_REG,
) -> list[LikelihoodScore]:
    """Score every ``(k, estimator)`` by the held-out log-likelihood of both classes.

    The last ``held_out_fraction`` of each class's rows is held out (rows come prompt by
    prompt, so this holds out whole prompts). Returns the scores, best first.
    """
    if not 0 < held_out_fraction < 1:
        raise UserInputError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
    unknown = sorted(set(estimators) - set(ESTIMATORS))
    if unknown:
        raise UserInputError(f"unknown estimator(s) {unknown}; choose from {list(ESTIMATORS)}")
    source, target = source.double(), target.double()
    splits = []
    for name, rows in (("source", source), ("target", target)):
        cut = round(rows.shape[0] * (1 - held_out_fraction))
        if cut < 2 or rows.shape[0] - cut < 1:
            raise UserInputError(f"{name} has {rows.shape[0]} rows: too few to hold some out")
        splits.append((rows[:cut], rows[cut:]))
    pooled = torch.cat([splits[0][0], splits[1][0]])
    scores = []
    for k in n_components:
        if not 1 <= k <= min(pooled.shape):
            raise UserInputError(f"n_components={k} must be in 1..{min(pooled.shape)}")
        basis = PCABasis.from_rows(pooled, k, method="exact")
        for estimator in estimators:
            value = (
                sum(
                    _class_log_likelihood(train, held, basis, estimator, reg)
                    for train, held in splits
                )
                / 2
            )
            scores.append(LikelihoodScore(k, estimator, value))
    return sorted(scores, key=lambda s: -s.log_likelihood)


def w2_by_layer(
    stats: StatsPair,
    n_layers: int,
    *,
    n_components: int | None,
    reg: float = DEFAULT_REG,
    hook: str = "resid_pre",
) -> list[dict[str, int | float]]:
    """Per layer, the squared W2 distance between the harmful and harmless Gaussians in a
    ``k``-dimensional PCA subspace, split into mean and covariance (Bures) parts, and
    ``w2_relative``: W2² over the mean total variance of the two, a scale-free version (the
    residual stream's norm grows with depth, and so does the raw distance).

    A layer where both classes are identical up to rounding (e.g. layer 0 of a rotary model at
    the chat template's tokens after the user message, the same for every prompt) gets W2² = 0
    exactly; ``layers_by_w2`` never picks one."""
    rows: list[dict[str, int | float]] = []
    for layer in range(n_layers):
        name = hook_name(hook, layer)
        try:
            fitted = GaussianOTMap.from_stats(
                stats[0][name], stats[1][name], n_components=n_components, reg=reg
            )
        except IdenticalClassesError:
            zero = {"w2": 0.0, "w2_mean": 0.0, "w2_bures": 0.0, "w2_relative": 0.0}
            rows.append({"layer": layer, **zero})
            continue
        diagnostics = fitted.diagnostics()
        spread = (
            torch.diagonal(fitted.cov_source, dim1=-2, dim2=-1).sum(-1)
            + torch.diagonal(fitted.cov_target, dim1=-2, dim2=-1).sum(-1)
        ) / 2
        rows.append(
            {
                "layer": layer,
                "w2": float(diagnostics.w2),
                "w2_mean": float(diagnostics.w2_mean),
                "w2_bures": float(diagnostics.w2_bures),
                "w2_relative": float(diagnostics.w2 / spread),
            }
        )
    return rows


def layers_by_w2(w2_rows: Sequence[Mapping[str, int | float]], *, count: int = 1) -> list[int]:
    """The ``count`` layers with the largest ``w2_relative`` (rows of ``w2_by_layer``), sorted.

    Raises:
        IdenticalClassesError: (a ``ValueError``) if fewer than ``count`` layers have W2² > 0:
            where harmful and harmless activations are identical any choice would be arbitrary.
    """
    if not 1 <= count <= len(w2_rows):
        raise UserInputError(f"count must be in 1..{len(w2_rows)} (the layers ranked), got {count}")
    apart = [row for row in w2_rows if row["w2_relative"] > 0]
    if len(apart) < count:
        raise IdenticalClassesError(
            f"the harmful and harmless activations are identical (W2² = 0, up to rounding) at "
            f"{len(w2_rows) - len(apart)} of {len(w2_rows)} layers, so only {len(apart)} "
            f"layer(s) can be ranked and {count} were asked for: choosing among identical "
            "layers would be arbitrary. Are the harmful and harmless prompts the same? Pass two "
            "prompt sets that differ, or name the layers"
        )
    ranked = sorted(apart, key=lambda row: -row["w2_relative"])
    return sorted(int(row["layer"]) for row in ranked[:count])


LayerSpec = list[int] | str
"""Layers of a job: a list of block indices, ``"auto"`` (``layers_by_w2`` on the training
statistics), ``"middle"`` (``middle_layer``) or, in ``compare`` only, ``"judged"`` (the candidate
layer whose map the judge finds most compliant on the validation prompts)."""

JUDGED_DEPTHS = (0.4, 0.5, 0.6)
"""Relative depths ``layers="judged"`` tries, besides the W2 pick: the paper's range."""


def judged_candidates(n_layers: int, w2_rows: Sequence[Mapping[str, int | float]]) -> list[int]:
    """The layers ``layers="judged"`` tries: those at ``JUDGED_DEPTHS`` of the model's depth and
    the W2² / variance pick (``layers_by_w2``), distinct, ascending."""
    return sorted(depth_candidates(n_layers) | set(layers_by_w2(w2_rows)))


def depth_candidates(n_layers: int) -> set[int]:
    """The layers at ``JUDGED_DEPTHS`` of a model's depth (``judged_candidates`` adds the W2
    pick)."""
    return {min(n_layers - 1, math.floor(depth * n_layers + 0.5)) for depth in JUDGED_DEPTHS}


def best_trial(trials: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The trial (``{"layer", "kl", "compliance", ...}``) with the highest judged compliance;
    ties go to the lower KL, then the earlier layer. A trial that could not be judged (its KL
    ceiling was 0: ``compliance`` is ``None``) or whose judging stopped early because it could
    no longer win (``judged_prompts`` set: ``eval.early_stop``) loses to any fully judged one."""
    if not trials:
        raise UserInputError("no layer trials to choose from")

    def unranked(trial: Mapping[str, Any]) -> bool:
        return trial["compliance"] is None or trial.get("judged_prompts") is not None

    return min(
        trials,
        key=lambda t: (
            1.0 if unranked(t) else -t["compliance"],
            t["kl"],
            t["layer"],
        ),
    )


def middle_layer(n_layers: int) -> int:
    """The middle block, the default layer of the refusal direction."""
    return n_layers // 2


def check_layer_spec(layers: object, *, judged: bool = False) -> None:
    """Raise unless ``layers`` is a valid ``LayerSpec`` (``"judged"`` only where ``judged``;
    indices are checked against a model later, by ``resolve_layers``)."""
    names = ("auto", "middle", "judged") if judged else ("auto", "middle")
    allowed = "a list, 'auto', 'middle' or 'judged'" if judged else "a list, 'auto' or 'middle'"
    if isinstance(layers, str):
        if layers == "judged" and not judged:
            raise UserInputError(
                "layers='judged' is chosen by compare on its validation prompts; here pass a "
                "list, 'auto' or 'middle'"
            )
        if layers not in names:
            raise UserInputError(f"layers must be {allowed}, got {layers!r}")
        return
    if not isinstance(layers, list | tuple):
        raise UserInputError(f"layers must be {allowed}, got {layers!r}")
    if not layers:
        raise UserInputError("layers is empty; name at least one layer, or 'auto'")
    bad = [layer for layer in layers if not (isinstance(layer, int) and layer >= 0)]
    if bad:
        raise UserInputError(f"layers must be block indices >= 0, got {bad}")


@dataclass(frozen=True)
class LayerChoice:
    """Concrete layers and how they were chosen ("w2_relative", "middle", "given" or "judged"),
    with the W2 table when one was computed and, when judged, every layer tried."""

    layers: list[int]
    how: str
    w2: list[dict[str, int | float]] | None = None
    trials: list[dict[str, Any]] | None = None


def resolve_layers(
    layers: LayerSpec,
    n_layers: int,
    stats: StatsPair | None = None,
    *,
    n_components: int | None = DEFAULT_N_COMPONENTS,
    reg: float = DEFAULT_REG,
    hook: str = "resid_pre",
) -> LayerChoice:
    """The one place layer specs become layers (compare, sweep, fit and ``select_layers``).

    ``"auto"`` needs ``stats`` at every layer and takes the top of ``layers_by_w2``; the W2 table
    is returned whenever ``stats`` is given.
    """
    check_layer_spec(layers)
    w2 = (
        None
        if stats is None
        else w2_by_layer(stats, n_layers, n_components=n_components, reg=reg, hook=hook)
    )
    if layers == "middle":
        return LayerChoice([middle_layer(n_layers)], "middle", w2)
    if layers == "auto":
        if w2 is None:
            raise UserInputError("layers='auto' needs the training statistics at every layer")
        return LayerChoice(layers_by_w2(w2), "w2_relative", w2)
    chosen: list[int] = sorted(set(layers))  # type: ignore[arg-type]
    if chosen[-1] >= n_layers:
        raise UserInputError(
            f"layer(s) {[layer for layer in chosen if layer >= n_layers]} out of range: this "
            f"model has layers 0..{n_layers - 1}"
        )
    return LayerChoice(chosen, "given", w2)


def select_layers(
    model: Any,
    harmful: Prompts,
    harmless: Prompts,
    *,
    count: int = 1,
    n_components: int | None = DEFAULT_N_COMPONENTS,
    reg: float = DEFAULT_REG,
    hook: str = "resid_pre",
    training: TrainingActivations | None = None,
    **options: Any,
) -> list[int]:
    """The ``count`` layers where harmful and harmless activations are furthest apart by
    W2² / variance, from one pass of statistics over every layer (``CollectOptions`` fields,
    e.g. ``batch_size``, ``positions``, ``progress``). What ``compare --layers auto`` uses.

    ``training``: that pass already made (``collect_every_layer`` on the same prompts and
    options, checked), so the fits that follow can share it."""
    check_distinct_prompts(harmful, harmless)
    if training is None:
        collect = CollectOptions(**options)
        training = collect_every_layer(model, harmful, harmless, collect, hook=hook)
    else:
        collect = CollectOptions(**options)
        training.check(training_fingerprint(model, harmful, harmless, collect))
    names = [hook_name(hook, layer) for layer in range(model.cfg.n_layers)]
    if training.lookup(names, rows=False) is None:
        raise UserInputError(
            f"`training` lacks some layers' {hook} statistics; collect them with "
            f"collect_every_layer(model, harmful, harmless, hook={hook!r})"
        )
    stats = training.stats
    ranking = w2_by_layer(stats, model.cfg.n_layers, n_components=n_components, reg=reg, hook=hook)
    return check_layers(model, layers_by_w2(ranking, count=count))
