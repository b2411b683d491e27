"""``compare``'s settings: every method fitted on one split, its strength chosen on a second,
evaluated on a third; the layer choice, the strength search, the judge and the sizes."""

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from ...core.errors import UserInputError
from ..damage import KL_THRESHOLD
from ..judge import check_judge_name
from ..methods import COMPARED, HEADLINE, METHODS, check_method
from ..selection import LayerSpec, check_layer_spec, middle_layer
from ..strength import check_fractions, check_rule
from .base import JobSettings
from .checks import (
    check_damage_measure,
    check_direction_layer,
    check_flag,
    check_layer_indices,
    finite_at_least,
    non_negative_int,
    positive_int,
    positive_number,
)


@dataclass(frozen=True)
class CompareSettings(JobSettings):
    """``compare``: every method fitted on one split, evaluated on a disjoint one.

    Attributes:
        layers: Layers of the selective methods (ActAdd, mean shift, per-neuron OT,
            ``ot_selective``): ``"judged"`` (default; ``"auto"`` in the quick preset): of the
            layers at 40 / 50 / 60 % depth and the W2 pick, the one where the first selective
            method (``ot_selective`` when run), at its KL ceiling, gets the most judged
            compliance on the validation harmful prompts (one generation pass each; it ties
            direction ablation where ``"auto"`` loses, README); ``"auto"``: where harmful and
            harmless training activations are furthest apart by W2² / variance (no
            generation); ``"middle"``; or a list. With no selective method to judge,
            ``"judged"`` falls back to ``"auto"`` (the layers are then unused).
        direction_layer: Layer whose mean difference gives the refusal direction (default:
            the middle layer).
        strength: Strength of every method when ``match_kl`` is ``None``.
        sequential: Fit later selected layers on transported activations.
        max_new_tokens: Greedy completion length (64: what the judge needs to see the answer
            take shape; README, "The compliance judge").
        judge_tokens: Refusal markers are searched in the first this many tokens.
        judge: The compliance judge's name: "classifier", "markers", "reader", a hub judge
            "hf:[KIND:]MODEL" (``eval.hf_judges``) or a ``judge.register_judge`` name.
        match_kl: ``"direction_ablation"`` (its validation KL is the budget), a number (the
            budget in nats) or ``None`` (no KL search: every ceiling is ``strength``).
        select: How a strength is chosen below its KL ceiling on the validation prompts
            (``eval.strength``): ``"compliance"`` (the judged-most-compliant of
            ``strength_fractions`` of the ceiling) or ``"kl"`` (the ceiling itself).
        strength_fractions: Fractions of the ceiling judged under ``select="compliance"``.
        max_strength: Upper end of the strength search.
        bisection_steps: Search steps per method (after strength 1 and ``max_strength``).
        methods: Which methods to run, names of ``methods.COMPARED`` ("none" always runs;
            default ``methods.HEADLINE``: direction ablation and ``ot_selective``).
        n_eval: Held-out prompts per class: the first this many of the shipped split or file.
        n_validation: Validation prompts per class for choosing strengths (shipped split or
            user files: the first this many).
        n_texts: Prose paragraphs for the perplexity check.
        n_questions: Shipped multiple-choice questions for the capability check (0: skip it).
        detect: Report each method's detectability by an activation monitor fitted on the
            clean training activations (``eval.detect``; costs no extra pass).
        match_measure: What the damage budget bounds (``damage.MATCH_MEASURES``): the mean
            first-token KL on the validation harmless prompts (``"mean"``, the default),
            its ``"median"``, ``"p90"``, or the ``"share_above"`` ``kl_threshold``. A numeric
            ``match_kl`` is in that measure's units (a share in (0, 1] for ``share_above``).
        kl_threshold: Nats above which a harmless prompt counts as moved
            (``damage.KL_THRESHOLD``): the share-above column and measure.
        n_xstest: Over-refusal prompts per class (safe, unsafe) when an XSTest-style set is
            given (``eval.xstest``): that many spread over the prompt types (``None``: all).
        early_stop: Judged validation passes (the layer search, the strength choices) decode
            and judge this many prompts at a time, and stop a candidate once it can no longer
            be chosen (``eval.early_stop``: exact, the same choice as judging every prompt of
            the same completions). The layer search then judges its candidates in the order
            of one forward pass's refusal log-odds, the likeliest winner first, so the rest
            stop sooner. ``None`` (the default): every prompt in one pass, never stopped. Off
            by default because on the package's prompts it saved nothing and cost time
            (``benchmarks/results/early-stop.json``: under the strict judge no candidate
            comes near a count that lets another stop, while decoding in smaller groups and
            the screen's forward passes are slower).
        gate_neighbours: For a gated map, the nearest training prompts listed for each of the
            held-out prompts that open its gate most (``eval.gate_report``; 0, the default:
            none). Costs one partial pass over the training prompts, up to the map's layer
            (minutes for the embedded model on a CPU, so it is off unless asked for).
    """

    layers: LayerSpec = "judged"
    direction_layer: int | None = None
    strength: float = 1.0
    sequential: bool = True
    max_new_tokens: int = 64
    judge_tokens: int = 32
    judge: str = "classifier"
    match_kl: str | float | None = "direction_ablation"
    select: str = "compliance"
    strength_fractions: tuple[float, ...] = (0.5, 0.75, 1.0)
    max_strength: float = 2.0
    bisection_steps: int = 6
    methods: tuple[str, ...] = HEADLINE
    n_eval: int = 32
    n_validation: int = 32
    n_texts: int = 8
    n_questions: int = 80
    detect: bool = True
    match_measure: str = "mean"
    kl_threshold: float = KL_THRESHOLD
    n_xstest: int | None = None
    gate_neighbours: int = 0
    early_stop: int | None = None

    OLDER_RECORDS: ClassVar[dict[str, Any]] = {"early_stop": None}  # judged every prompt

    QUICK: ClassVar[dict[str, Any]] = {
        "layers": "auto",
        "n_train": 64,
        "n_eval": 16,
        "n_texts": 4,
        "max_new_tokens": 32,  # decoding is most of the run: 48 tokens took 11 min on 2 cores
        "bisection_steps": 4,
        "n_questions": 24,
        "n_validation": 16,
        "strength_fractions": (0.5, 1.0),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        for method in self.methods:
            check_method(method, among=COMPARED)
        if isinstance(self.match_kl, str) and self.match_kl != "direction_ablation":
            raise UserInputError(
                f"match_kl must be 'direction_ablation', a KL budget in nats or None, got "
                f"{self.match_kl!r}"
            )
        if isinstance(self.match_kl, int | float):
            positive_number(self.match_kl, "match_kl")
        if self.match_kl == "direction_ablation" and "direction_ablation" not in self.methods:
            raise UserInputError("match_kl='direction_ablation' needs that method in `methods`")
        check_layer_spec(self.layers, judged=True)
        check_direction_layer(self.direction_layer)
        finite_at_least(self.strength, 0, "strength")
        finite_at_least(self.max_strength, 1, "max_strength")
        for name in ("max_new_tokens", "judge_tokens", "n_eval", "n_validation", "n_texts"):
            positive_int(getattr(self, name), name)
        check_rule(self.select, "select")
        check_fractions(self.strength_fractions)
        if not (isinstance(self.n_questions, int) and self.n_questions >= 0):
            raise UserInputError(f"n_questions must be an integer >= 0, got {self.n_questions!r}")
        check_judge_name(self.judge)
        check_flag(self.detect, "detect")
        check_damage_measure(self.match_measure, self.kl_threshold, self.match_kl, "match_kl")
        if self.n_xstest is not None:
            positive_int(self.n_xstest, "n_xstest")
        non_negative_int(self.gate_neighbours, "gate_neighbours")
        if self.early_stop is not None:
            positive_int(self.early_stop, "early_stop")
        if not (isinstance(self.bisection_steps, int) and self.bisection_steps >= 0):
            raise UserInputError(
                f"bisection_steps must be an integer >= 0, got {self.bisection_steps}"
            )

    def check_layers(self, n_layers: int) -> None:
        self.resolve(n_layers)

    @property
    def judged_method(self) -> str | None:
        """The method whose judged compliance picks the layer under ``layers="judged"``:
        ``ot_selective`` when run, else the first selective method (``None``: none runs)."""
        selective = [m for m in self.methods if METHODS[m].selective]
        if "ot_selective" in selective:
            return "ot_selective"
        return selective[0] if selective else None

    def resolve(self, n_layers: int) -> "CompareSettings":
        """A copy with "none" first, the methods in report order, ``"middle"`` and the
        direction layer filled in, and layer indices checked against ``n_layers``."""
        layers: LayerSpec = self.layers
        if layers == "judged" and self.judged_method is None:
            layers = "auto"  # nothing selective to judge; the layers go unused
        if layers == "middle":
            layers = [middle_layer(n_layers)]
        elif not isinstance(layers, str):
            layers = sorted(set(layers))
        check_layer_indices([*([] if isinstance(layers, str) else layers)], n_layers)
        direction = self.direction_layer
        direction = middle_layer(n_layers) if direction is None else direction
        check_layer_indices([direction], n_layers, name="direction_layer")
        methods = tuple(m for m in METHODS if m in self.methods or m == "none")
        return dataclasses.replace(self, layers=layers, direction_layer=direction, methods=methods)
