"""An activation monitor on a model: the safeguard a provider could run against OT ablation.

``ActivationMonitor.fit`` streams the clean (unmodified) activations of harmful and harmless
prompts at chosen layers into ``GaussianStats`` (the fit's own collection code,
``lens.training.collect_pair``) and fits one ``core.monitor.GaussianMonitor`` per layer; the
monitor then scores any forward pass (``likelihood``, ``disagreement``, and, once
``with_probe`` has trained it on an attack, ``probe``; higher = more anomalous). Its hooks
record into a ``ScoreLog`` (``lens.monitor_log``).

Where it sits. A hook sees the residual stream as the hooks registered *before* it at that hook
point left it, so a monitor must sit at or after the intervention's hook point: an edit at
layer ``l``'s ``resid_pre`` is visible at ``resid_pre`` of ``l`` only when the monitor is
registered after the edit, and always at ``resid_mid`` / ``resid_post`` of ``l`` and at every
later layer. The default is ``resid_post``, where the edit has gone through block ``l`` and
the registration order no longer matters (the package intervenes at ``resid_pre``). Note that
``blocks.l.hook_resid_post`` is *not* ``blocks.{l+1}.hook_resid_pre``: an edit at the latter
is invisible to the former. ``score`` warns when every intervention hook sits after a
monitored layer.

Positions. Rows are read where the fit read them (``"post_instruction"`` by default, or
``"last"``); a prompt's score is the *mean of its rows' scores* (not the score of the mean
row, which the per-row Gaussians do not describe). During generation the hook sees each new
token as a single-token pass and scores that row; those are compared with statistics of the
prompts' post-instruction rows, so calibrate thresholds on clean generations before reading
them as alarms.
"""

import contextlib
import dataclasses
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.errors import UserInputError
from ..core.monitor import GaussianMonitor, MonitorEstimator
from ..core.ot_fit import DEFAULT_REG
from ..core.probe import DEFAULT_PROBE_L2, LinearProbe
from ..core.validate import stacklevel_outside
from .chat_template import post_instruction_length
from .collect import (
    CollectOptions,
    Prompts,
    check_layers,
    collect_activations,
    hook_name,
    require_eval,
)
from .hook_order import first_position, stream_position
from .intervention_set import InterventionSet
from .map_spec import DEFAULT_N_COMPONENTS
from .monitor_log import MonitorHook, ScoreLog, Scores, score_rows
from .training import TrainingActivations, collect_pair, n_prompts, prompts_hash

MonitorHookKind = Literal["resid_pre", "resid_mid", "resid_post"]
MonitorPositions = Literal["post_instruction", "last"]
HookList = Sequence[tuple[str, Any]]


def as_hook_list(hooks: InterventionSet | HookList) -> list[tuple[str, Any]]:
    """``(hook_name, fn)`` pairs from an ``InterventionSet`` or a list of them."""
    if isinstance(hooks, InterventionSet):
        return hooks.fwd_hooks()
    return list(hooks)


def _check_positions(collect: CollectOptions) -> None:
    if collect.positions not in get_args(MonitorPositions):
        raise UserInputError(
            f"the monitor reads positions {get_args(MonitorPositions)}, got "
            f"{collect.positions!r} ('all' gives prompts different numbers of rows)"
        )


@dataclass(frozen=True)
class MonitorSpec:
    """How each layer's ``GaussianMonitor`` is fitted (``GaussianMonitor.from_stats``).

    Attributes:
        n_components: PCA subspace size ``k`` (< d_model); matching the attack's ``k`` makes
            ``disagreement`` read exactly the subspace a map edits.
        reg: Relative ridge.
        estimator: Subspace covariance estimator, "oas" or "ridge".
        prior: Prior probability of harmful.
    """

    n_components: int = DEFAULT_N_COMPONENTS
    reg: float = DEFAULT_REG
    estimator: MonitorEstimator = "oas"
    prior: float = 0.5


class ActivationMonitor:
    """Clean-activation Gaussians at some layers, scoring forward passes for tampering.

    Attributes:
        monitors: One ``GaussianMonitor`` per layer.
        hook: The residual hook point monitored at each layer (see the module docstring).
        collect: How prompts are run (positions, batch size, system prompt, progress).
        n_post_instruction: Length of the post-instruction span (``positions="post_instruction"``).
        probes: One ``LinearProbe`` per layer, once ``with_probe`` trained them, else empty.
        metadata: What the monitor was fitted on.
        log: Where ``fwd_hooks()`` records when given no other ``ScoreLog``.

    Example:
        >>> from tl_ot_ablation.lens.tiny import tiny_model
        >>> model = tiny_model()
        >>> harmful, harmless = ["a b c", "d e", "f g h"], ["i j", "k l m", "n o"]
        >>> mon = ActivationMonitor.fit(model, harmful, harmless, layers=[1],
        ...                             spec=MonitorSpec(n_components=4),
        ...                             collect=CollectOptions(progress=False))
        >>> {name: tuple(s[1].shape) for name, s in mon.score(model, harmful).items()}
        {'likelihood': (3,), 'disagreement': (3,)}
    """

    def __init__(
        self,
        monitors: Mapping[int, GaussianMonitor],
        *,
        hook: MonitorHookKind = "resid_post",
        collect: CollectOptions | None = None,
        n_post_instruction: int | None = None,
        probes: Mapping[int, LinearProbe] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if not monitors:
            raise UserInputError("an ActivationMonitor needs at least one layer's GaussianMonitor")
        if hook not in get_args(MonitorHookKind):
            raise UserInputError(f"hook must be one of {get_args(MonitorHookKind)}, got {hook!r}")
        collect = collect or CollectOptions()
        _check_positions(collect)
        if collect.positions == "post_instruction" and not n_post_instruction:
            raise UserInputError("positions='post_instruction' needs n_post_instruction")
        probes = dict(probes or {})
        if probes and set(probes) != set(monitors):
            raise UserInputError(
                f"probes cover layers {sorted(probes)}, the monitor {sorted(monitors)}"
            )
        self.monitors = dict(sorted(monitors.items()))
        self.hook = hook
        self.collect = collect
        self.n_post_instruction = n_post_instruction
        self.probes = probes
        self.metadata = dict(metadata or {})
        self.log = ScoreLog()

    def __repr__(self) -> str:
        return (
            f"ActivationMonitor(layers={self.layers}, hook={self.hook!r}, "
            f"positions={self.collect.positions!r}, scores={self.score_names})"
        )

    @property
    def layers(self) -> list[int]:
        """The monitored layers, ascending."""
        return list(self.monitors)

    @property
    def hook_names(self) -> dict[int, str]:
        """``{layer: hook name}`` of the monitored hook points."""
        return {layer: hook_name(self.hook, layer) for layer in self.monitors}

    @property
    def score_names(self) -> tuple[str, ...]:
        """The scores every scoring method returns (``probe`` only once trained)."""
        return ("likelihood", "disagreement", *(("probe",) if self.probes else ()))

    @property
    def n_positions(self) -> int:
        """Rows per prompt: the post-instruction span, or 1 for ``positions="last"``."""
        if self.collect.positions == "last":
            return 1
        assert self.n_post_instruction is not None
        return self.n_post_instruction

    @classmethod
    def fit(
        cls,
        model: Any,
        harmful: Prompts,
        harmless: Prompts,
        layers: Sequence[int],
        *,
        spec: MonitorSpec | None = None,
        hook: MonitorHookKind = "resid_post",
        collect: CollectOptions | None = None,
        training: TrainingActivations | None = None,
    ) -> "ActivationMonitor":
        """Fit on the unmodified activations of harmful and harmless (training) prompts.

        Args:
            model: A ``TransformerBridge`` in eval mode.
            harmful: Harmful instructions (or tokens).
            harmless: Harmless instructions (or tokens).
            layers: Block indices to monitor.
            spec: The Gaussians' settings (``MonitorSpec``: ``n_components``, ``reg``,
                ``estimator``, ``prior``).
            hook: ``"resid_post"`` (default), ``"resid_mid"`` or ``"resid_pre"``.
            collect: How the prompts are run (``CollectOptions``; ``positions``
                "post_instruction" or "last").
            training: Cached activations of these prompts at the monitored hook points
                (``lens.training.collect_training``), used instead of a new pass.
        """
        spec = MonitorSpec() if spec is None else spec
        collect = CollectOptions() if collect is None else collect
        chosen = check_layers(model, layers)
        names = [hook_name(hook, layer) for layer in chosen]
        n_post = None
        if collect.positions == "post_instruction":
            n_post = post_instruction_length(model.tokenizer, system=collect.system)
        _check_positions(collect)  # before the pass, not after it
        stats_h, stats_b = collect_pair(model, harmful, harmless, names, collect, training=training)
        monitors = {
            layer: GaussianMonitor.from_stats(
                stats_h[name].to("cpu"),
                stats_b[name].to("cpu"),
                n_components=spec.n_components,
                reg=spec.reg,
                estimator=spec.estimator,
                prior=spec.prior,
            )
            for layer, name in zip(chosen, names, strict=True)
        }
        metadata = {
            "model": getattr(model.cfg, "model_name", None),
            "d_model": model.cfg.d_model,
            "layers": chosen,
            "hook": hook,
            "n_components": spec.n_components,
            "reg": spec.reg,
            "estimator": spec.estimator,
            "prior": spec.prior,
            "positions": collect.positions,
            "n_harmful": n_prompts(harmful),
            "n_harmless": n_prompts(harmless),
            "prompts_sha256": prompts_hash(harmful, harmless),
        }
        return cls(
            monitors, hook=hook, collect=collect, n_post_instruction=n_post, metadata=metadata
        )

    def with_probe(
        self,
        model: Any,
        harmful: Prompts,
        harmless: Prompts,
        *,
        fwd_hooks: InterventionSet | HookList,
        l2: float = DEFAULT_PROBE_L2,
        max_iter: int = 500,
        clean: tuple[Mapping[int, Tensor], Mapping[int, Tensor]] | None = None,
    ) -> "ActivationMonitor":
        """Copy with a ``LinearProbe`` per layer, trained on *training* prompts to tell clean
        rows (harmful and harmless) from the rows of harmful prompts under ``fwd_hooks`` (the
        attack). The supervised reference for the unsupervised scores. ``clean``: the
        ``collect_rows`` of ``harmful`` and ``harmless`` without hooks, if already collected
        (probes for several attacks share them)."""
        if clean is None:
            clean = (self.collect_rows(model, harmful), self.collect_rows(model, harmless))
        clean_h, clean_b = clean
        edited = self.collect_rows(model, harmful, fwd_hooks=fwd_hooks)
        flat = lambda t: t.reshape(-1, t.shape[-1])  # noqa: E731
        probes = {
            layer: LinearProbe.fit(
                torch.cat([flat(clean_h[layer]), flat(clean_b[layer])]),
                flat(edited[layer]),
                l2=l2,
                max_iter=max_iter,
            )
            for layer in self.monitors
        }
        metadata = {**self.metadata, "probe_l2": l2, "probe_prompts": n_prompts(harmful)}
        return ActivationMonitor(
            self.monitors,
            hook=self.hook,
            collect=self.collect,
            n_post_instruction=self.n_post_instruction,
            probes=probes,
            metadata=metadata,
        )

    def _warn_if_blind(self, hooks: list[tuple[str, Any]]) -> None:
        first = first_position(name for name, _ in hooks)
        if first is None:
            return
        for layer in self.monitors:
            here = stream_position(self.hook_names[layer])
            if here is not None and here < first:
                warnings.warn(
                    f"the monitor at {self.hook_names[layer]} sits before every intervention "
                    f"hook (the first is at layer {first[0]}), so it cannot see the edit; "
                    "monitor a later layer or a later hook point",
                    UserWarning,
                    stacklevel=stacklevel_outside(sys._getframe()),
                )

    def collect_rows(
        self,
        model: Any,
        prompts: Prompts,
        *,
        fwd_hooks: InterventionSet | HookList = (),
        batch_size: int | None = None,
    ) -> dict[int, Float[Tensor, "n pos d_model"]]:
        """The rows the monitor reads, ``{layer: [n_prompts, n_positions, d_model]}`` (float64,
        CPU: exact copies of the activations), with ``fwd_hooks`` installed before it."""
        require_eval(model)
        hooks = as_hook_list(fwd_hooks)
        self._warn_if_blind(hooks)
        names = self.hook_names
        # The prompts are always chat-formatted here (``chat`` is not taken from the fit).
        run = dataclasses.replace(
            self.collect, batch_size=batch_size or self.collect.batch_size, chat=True
        )
        rows = collect_activations(
            model, prompts, list(names.values()), run, fwd_hooks=hooks, dtype=torch.float64
        )
        n = n_prompts(prompts)
        return {
            layer: rows[name].reshape(n, self.n_positions, rows[name].shape[-1])
            for layer, name in names.items()
        }

    def score_activations(self, acts: Mapping[int, Tensor] | Mapping[str, Tensor]) -> Scores:
        """Scores of collected activations, per row: ``{score: {layer: [...]}}`` for
        ``acts = {layer or hook name: [..., d_model]}`` (e.g. ``collect_activations`` output
        at ``hook_names``)."""
        by_name = {name: layer for layer, name in self.hook_names.items()}
        out: Scores = {}
        for key, rows in acts.items():
            layer = by_name.get(key) if isinstance(key, str) else key
            if layer not in self.monitors:
                raise KeyError(
                    f"{key!r} is not a monitored layer or hook name; the monitor watches "
                    f"{self.hook_names}"
                )
            scores = score_rows(self.monitors[layer], self.probes.get(layer), rows)
            for name, value in scores.items():
                out.setdefault(name, {})[layer] = value
        return out

    def score(
        self,
        model: Any,
        prompts: Prompts,
        *,
        fwd_hooks: InterventionSet | HookList = (),
        batch_size: int | None = None,
    ) -> Scores:
        """Per-prompt scores ``{score: {layer: [n_prompts]}}`` of a pass over ``prompts``
        with ``fwd_hooks`` (e.g. an intervention) installed before the monitor; each prompt's
        score is the mean over its positions' rows."""
        rows = self.collect_rows(model, prompts, fwd_hooks=fwd_hooks, batch_size=batch_size)
        return self.prompt_scores(rows)

    def prompt_scores(self, rows: Mapping[int, Float[Tensor, "n pos d_model"]]) -> Scores:
        """Per-prompt scores ``{score: {layer: [n]}}`` of ``collect_rows`` output: each row
        scored, then averaged over the prompt's positions."""
        return {
            name: {layer: value.mean(-1) for layer, value in by_layer.items()}
            for name, by_layer in self.score_activations(rows).items()
        }

    def fwd_hooks(self, log: ScoreLog | None = None) -> list[tuple[str, MonitorHook]]:
        """Observe-only ``(hook_name, fn)`` pairs that record scores into ``log`` (default:
        ``self.log``); register them *after* any intervention at the same hook point (TL runs
        hooks in registration order)."""
        log = self.log if log is None else log
        return [
            (
                name,
                MonitorHook(
                    self.monitors[layer], self.probes.get(layer), layer, self.n_positions, log
                ),
            )
            for layer, name in self.hook_names.items()
        ]

    @contextlib.contextmanager
    def watch(
        self, model: Any, *, fwd_hooks: InterventionSet | HookList = ()
    ) -> Iterator[ScoreLog]:
        """Run the block with ``fwd_hooks`` and then the monitor's hooks installed; yields the
        ``ScoreLog`` they fill (``prompt_scores()``, ``token_scores()`` for generation).

        Example: ``with monitor.watch(model, fwd_hooks=edit) as log: generate(model, prompts)``.
        """
        hooks = as_hook_list(fwd_hooks)
        self._warn_if_blind(hooks)
        log = ScoreLog()
        with model.hooks(fwd_hooks=[*hooks, *self.fwd_hooks(log)]):
            yield log
