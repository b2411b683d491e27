"""Training activations: both prompt sets read once at many hook points, fingerprinted.

A fit needs the statistics (or, for Ledoit-Wolf, the rows) of the harmful and harmless
activations at its hook points. ``collect_pair`` reads them for one fit; ``collect_training``
and ``collect_every_layer`` read them once for many (ranking layers, then fitting every
method), as ``TrainingActivations``. Those carry a fingerprint of what activations depend on
besides the weights (the prompts, positions, system prompt and chat template), and a fit that
uses them with other ones raises rather than fitting on the wrong data.
"""

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from ..core.errors import UserInputError
from ..core.stats import GaussianStats
from .chat_template import post_instruction_length
from .collect import CollectOptions, Prompts, collect_activations, collect_stats, hook_name

StatsPair = tuple[Mapping[str, GaussianStats], Mapping[str, GaussianStats]]
RowsPair = tuple[Mapping[str, Tensor], Mapping[str, Tensor]]


def prompts_hash(*prompt_sets: Prompts) -> str:
    """SHA-256 (first 16 hex digits) of the prompt sets, recorded with every fit."""
    digest = hashlib.sha256()
    for prompts in prompt_sets:
        if isinstance(prompts, tuple):
            for tensor in prompts:
                digest.update(tensor.cpu().numpy().tobytes())
        else:
            digest.update(json.dumps(list(prompts)).encode())
    return digest.hexdigest()[:16]


def training_fingerprint(
    model: Any, harmful: Prompts, harmless: Prompts, options: CollectOptions
) -> str:
    """What activations depend on besides the weights: the prompts, the fitting positions, the
    system prompt and the chat template, if used (hex SHA-256, first 16 digits)."""
    template = getattr(model.tokenizer, "chat_template", None) if options.chat else "raw text"
    described = json.dumps(
        [prompts_hash(harmful, harmless), options.positions, options.system, template]
    )
    return hashlib.sha256(described.encode()).hexdigest()[:16]


def n_prompts(prompts: Prompts) -> int:
    """How many prompts: instructions, or rows of an ``(input_ids, attention_mask)`` pair."""
    return len(prompts[0]) if isinstance(prompts, tuple) else len(prompts)


@dataclass
class TrainingActivations:
    """Both prompt sets' activations at many hook points from one pass: the statistics always,
    the rows too when an estimator needs them (Ledoit-Wolf), so no fit repeats the pass.

    Attributes:
        stats: ``(harmful, harmless)`` statistics by hook name.
        rows: The same for the rows, or ``None``.
        fingerprint: ``training_fingerprint`` of the prompts and options they came from.
    """

    stats: StatsPair
    rows: RowsPair | None = None
    fingerprint: str = field(default="", kw_only=True)

    def check(self, fingerprint: str) -> None:
        """Raise unless these activations came from the prompts and options a fit uses."""
        if self.fingerprint != fingerprint:
            raise UserInputError(
                f"the cached training activations (fingerprint {self.fingerprint or 'none'}) "
                f"were not collected from these prompts, positions, system prompt and chat "
                f"template (fingerprint {fingerprint}); collect them again with "
                "collect_every_layer(model, harmful, harmless, ...) using the fit's options"
            )

    def lookup(self, names: Sequence[str], *, rows: bool) -> Any:
        """The cached pair restricted to ``names``, or ``None`` if a name (or the rows) is
        missing."""
        pair = self.rows if rows else self.stats
        if pair is None or not all(n in pair[0] and n in pair[1] for n in names):
            return None
        return {n: pair[0][n] for n in names}, {n: pair[1][n] for n in names}


def collect_pair(
    model: Any,
    harmful: Prompts,
    harmless: Prompts,
    names: Sequence[str],
    options: CollectOptions,
    *,
    rows: bool = False,
    fwd_hooks: Sequence[tuple[str, Any]] = (),
    training: TrainingActivations | None = None,
) -> Any:
    """Statistics (or, with ``rows``, the activation rows) of both prompt sets at ``names``.

    ``training`` stands in for the pass when it holds every name and no earlier hooks change
    the activations; it must come from the same prompts and options (checked).
    """
    if training is not None:
        training.check(training_fingerprint(model, harmful, harmless, options))
        if not fwd_hooks:
            hit = training.lookup(names, rows=rows)
            if hit is not None:
                return hit
    if rows:  # rows stay on their layer's device: the fit runs there, no round trip
        return tuple(
            collect_activations(model, prompts, names, options, fwd_hooks=fwd_hooks, device=None)
            for prompts in (harmful, harmless)
        )
    return tuple(
        collect_stats(model, prompts, names, options, fwd_hooks=fwd_hooks)
        for prompts in (harmful, harmless)
    )


def collect_stats_pair(
    model: Any,
    harmful: Prompts,
    harmless: Prompts,
    names: Sequence[str],
    options: CollectOptions | None = None,
) -> StatsPair:
    """Streamed statistics of both prompt sets at ``names``."""
    return collect_pair(model, harmful, harmless, names, options or CollectOptions())


ROWS_CACHE_BYTES = 4 * 2**30
"""Keep every layer's training rows in memory only below this size (float32 bytes)."""


def rows_bytes(
    model: Any, n_rows_prompts: int, n_names: int, positions: str, system: str | None = None
) -> int | None:
    """Float32 bytes of the rows ``n_rows_prompts`` prompts give at ``n_names`` hook points
    (``None`` when it depends on the prompts' lengths, for ``positions="all"``)."""
    if positions == "last":
        per_prompt = 1
    elif positions == "post_instruction":
        per_prompt = post_instruction_length(model.tokenizer, system=system)
    else:
        return None
    return n_rows_prompts * per_prompt * n_names * model.cfg.d_model * 4


def collect_training(
    model: Any,
    harmful: Prompts,
    harmless: Prompts,
    names: Sequence[str],
    options: CollectOptions | None = None,
    *,
    keep_rows: bool = False,
) -> TrainingActivations:
    """One pass per prompt set over ``names`` (run as ``options`` say): statistics, and with
    ``keep_rows`` the rows as well (the statistics are then computed from them)."""
    collect = options or CollectOptions()
    fingerprint = training_fingerprint(model, harmful, harmless, collect)
    if not keep_rows:
        stats = collect_pair(model, harmful, harmless, names, collect)
        return TrainingActivations(stats, fingerprint=fingerprint)
    rows = collect_pair(model, harmful, harmless, names, collect, rows=True)
    stats = (
        {name: GaussianStats.from_rows(block) for name, block in rows[0].items()},
        {name: GaussianStats.from_rows(block) for name, block in rows[1].items()},
    )
    return TrainingActivations(stats, rows, fingerprint=fingerprint)


def collect_every_layer(
    model: Any,
    harmful: Prompts,
    harmless: Prompts,
    options: CollectOptions | None = None,
    *,
    estimator: str = "ridge",
    hook: str = "resid_pre",
) -> TrainingActivations:
    """``collect_training`` at every layer's ``hook``: one pass per prompt set that ranks the
    layers and feeds every later fit. The rows are kept too when ``estimator`` needs them
    (Ledoit-Wolf) and they fit in ``ROWS_CACHE_BYTES``. Pass the ``CollectOptions`` the fits
    will use: the activations are fingerprinted with them.

    Example:
        >>> from tl_ot_ablation.lens.tiny import tiny_model
        >>> acts = collect_every_layer(tiny_model(), ["a b", "c d"], ["e f", "g"],
        ...                            CollectOptions(progress=False))
        >>> sorted(acts.stats[0]), acts.rows is None
        (['blocks.0.hook_resid_pre', 'blocks.1.hook_resid_pre', 'blocks.2.hook_resid_pre'], True)
    """
    collect = options or CollectOptions()
    names = [hook_name(hook, layer) for layer in range(model.cfg.n_layers)]
    size = rows_bytes(
        model,
        n_prompts(harmful) + n_prompts(harmless),
        len(names),
        collect.positions,
        collect.system,
    )
    keep_rows = estimator == "ledoit_wolf" and size is not None and size <= ROWS_CACHE_BYTES
    return collect_training(model, harmful, harmless, names, collect, keep_rows=keep_rows)
