"""``tl-ot-ablation`` (also ``python -m tl_ot_ablation``): compare, sweep, fit, generate, monitor,
and read (blind reading of a compare report by people; no model).

Parse, build the job's settings (checked before the model loads), load the model, call one
library function per command (``eval.jobs``), print. With no options, ``compare`` fits every
method on the package's own 64 + 64 training prompts and evaluates it on the disjoint 32 + 32
held-out ones with the embedded default model, at matched harmless KL, and writes a report
folder. ``--quick`` selects the small preset (``Settings.preset("quick")`` in Python).

Exit codes: 0 success; 2 bad input (arguments, files, prompts, an output folder in the way);
1 a failure while running (the message says what); 130 interrupted (nothing half-written).
"""

import argparse
import math
import re
import shlex
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from .core.devices import resolve_device
from .core.errors import UserInputError
from .eval.damage import KL_THRESHOLD, MATCH_MEASURES
from .eval.hf_judges import check_available
from .eval.jobs import (
    JobPrompts,
    check_monitor_prompts,
    check_output,
    compare_job,
    fit_job,
    monitor_job,
    sweep_job,
)
from .eval.judge import check_judge_name
from .eval.methods import COMPARED, HEADLINE, METHODS, SWEPT
from .eval.record import compare_strengths
from .eval.report import comparison_table, detection_table, verdict
from .eval.settings import (
    MAX_BLOCKS,
    MONITOR_HOOKS,
    MONITORED,
    CompareSettings,
    FitSettings,
    JobSettings,
    MonitorSettings,
    SweepSettings,
)
from .eval.strength import RULES
from .io import atomic
from .lens.generation import generate
from .lens.intervention_set import InterventionSet
from .lens.models import DEFAULT_MODEL, load_model
from .lens.prompts import load_prompts

DTYPES: dict[str, torch.dtype | Literal["auto"]] = {
    "auto": "auto",
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
}
BAD_INPUT, FAILED, INTERRUPTED = 2, 1, 130
_LAYER_LIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


def _layers(value: str) -> list[int]:
    """``"14"``, ``"11,14"`` or ``"10-15"`` → layer list (every range checked before any is
    built: ``0-1000000000`` would take tens of GB)."""
    if not _LAYER_LIST.match(value):
        raise argparse.ArgumentTypeError(
            "expected layers like 14, 11,14 or 10-15 (block indices >= 0, no spaces), got "
            f"{value!r}"
        )
    ranges = [_layer_range(part) for part in value.split(",")]
    if sum(stop - start + 1 for start, stop in ranges) > MAX_BLOCKS:
        raise argparse.ArgumentTypeError(
            f"{value!r} names more than {MAX_BLOCKS} layers; no model has more than "
            f"{MAX_BLOCKS} blocks"
        )
    return [layer for start, stop in ranges for layer in range(start, stop + 1)]


def _layer_range(part: str) -> tuple[int, int]:
    """``"10-15"`` → ``(10, 15)``, ``"14"`` → ``(14, 14)``; refuses a backward range and an
    index no model has (``MAX_BLOCKS``)."""
    start, _, stop = part.partition("-")
    for index in (start, stop or start):
        if len(index.lstrip("0")) > len(str(MAX_BLOCKS)) or int(index) >= MAX_BLOCKS:
            raise argparse.ArgumentTypeError(
                f"layer {index} is beyond any model: no model has more than {MAX_BLOCKS} "
                f"blocks (indices 0..{MAX_BLOCKS - 1}); give this model's block indices"
            )
    if int(stop or start) < int(start):
        raise argparse.ArgumentTypeError(f"layer range {part!r} runs backwards; write it low-high")
    return int(start), int(stop or start)


def _selective_layers(value: str) -> list[int] | str:
    """``"auto"``, ``"middle"`` or a layer list (see ``_layers``)."""
    if value == "judged":
        raise argparse.ArgumentTypeError(
            "'judged' is chosen by compare on its validation prompts; here give 'auto', "
            "'middle' or layers like 14, 11,14 or 10-15"
        )
    return value if value in ("auto", "middle") else _layers(value)


def _compare_layers(value: str) -> list[int] | str:
    """``compare`` also takes ``"judged"`` (chosen on its validation prompts)."""
    return value if value == "judged" else _selective_layers(value)


def _sweep_kl_budget(value: str) -> str | float:
    """``sweep`` always picks its best point within a budget: ``none`` is refused."""
    budget = _kl_budget(value)
    if budget is None:
        raise argparse.ArgumentTypeError(
            "sweep needs a KL budget to pick its best point: 'direction_ablation' or nats > 0"
        )
    return budget


def _monitor_layers(value: str) -> list[int] | str:
    """``"auto"`` or a layer list (see ``_layers``)."""
    return value if value == "auto" else _layers(value)


def _kl_budget(value: str) -> str | float | None:
    if value in ("direction_ablation", "none"):
        return None if value == "none" else value
    try:
        budget = float(value)
    except ValueError:
        budget = float("nan")
    if not budget > 0 or budget == float("inf"):
        raise argparse.ArgumentTypeError(
            f"expected 'direction_ablation', 'none' or a KL budget > 0 in nats, got {value!r}"
        )
    return budget


def _add_common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and prompts")
    group.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="embedded model name, hub name, local .gguf file or folder; 'tiny' is a "
        f"random-weight test model (default: {DEFAULT_MODEL})",
    )
    group.add_argument(
        "--dtype",
        choices=list(DTYPES),
        default="auto",
        help="weight dtype; auto: bfloat16 where the hardware computes it natively, else "
        "float32 (faster on CPUs without bf16 instructions)",
    )
    group.add_argument("--device", default=None, help="e.g. cpu, cuda, cuda:1 (default: auto)")
    for flag, text in (
        ("--harmful", "training harmful prompts (JSON/JSONL/CSV/text)"),
        ("--harmless", "training harmless prompts"),
        ("--eval-harmful", "held-out harmful prompts"),
        ("--eval-harmless", "held-out harmless prompts"),
        ("--texts", "plain-text paragraphs for perplexity"),
        ("--questions", "multiple-choice questions (JSON, or MMLU-style CSV) for capability"),
    ):
        group.add_argument(flag, type=Path, help=text)
    group.add_argument(
        "--n-train", type=int, help="training prompts per side (first N of split or file)"
    )
    group.add_argument(
        "--n-eval", type=int, help="held-out prompts per side (first N of split or file)"
    )
    group.add_argument("--system", help="system prompt for the chat template")
    group.add_argument(
        "--allow-overlap",
        action="store_true",
        help="evaluate even when held-out prompts also appear in the training prompts",
    )
    group.add_argument(
        "--allow-control-tokens",
        action="store_true",
        help="let prompts and --system hold the tokenizer's control tokens (e.g. <|im_end|>), "
        "which act as real chat-turn markers (refused by default)",
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--quick",
        action="store_true",
        help="the small preset: fewer prompts, tokens and search steps (README, run times)",
    )
    run.add_argument("--batch-size", type=int, default=32, help="prompts per forward pass")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", type=Path, help="output folder (default: reports/<command>)")
    run.add_argument("--force", action="store_true", help="replace a folder we did not write")
    run.add_argument("--no-plots", action="store_true")
    run.add_argument("--no-progress", action="store_true")


def _add_map_options(group: argparse._ArgumentGroup) -> None:
    """The map fields every job shares (defaults: ``JobSettings``, the recommended map)."""
    defaults = JobSettings()
    group.add_argument("-k", "--n-components", type=int, default=defaults.n_components)
    group.add_argument("--reg", type=float, default=defaults.reg)
    group.add_argument(
        "--estimator", choices=["ridge", "oas", "ledoit_wolf"], default=defaults.estimator
    )
    group.add_argument("--gate", choices=["none", "posterior", "hard"], default=defaults.gate)
    group.add_argument("--preserve-norm", action="store_true")
    group.add_argument("--positions", choices=["post_instruction", "last", "all"])


def _add_compare(commands: Any) -> None:
    compare = commands.add_parser("compare", help="all methods side by side, at matched KL")
    _add_common(compare)
    group = compare.add_argument_group("methods")
    group.add_argument(
        "--layers",
        type=_compare_layers,
        help="selective layers: 'judged' (the default: of the layers at 40/50/60%% depth and "
        "the auto pick, the one whose ot_selective map the judge finds most compliant on the "
        "validation prompts; a generation pass per layer), 'auto' (the --quick default: the "
        "layer where harmful and harmless training activations are furthest apart, by W2² / "
        "variance; no generation), 'middle', or e.g. 14, 11,14, 10-15",
    )
    group.add_argument("--direction-layer", type=int, help="layer of the refusal direction")
    group.add_argument("--strength", type=float, default=1.0, help="used with --match-kl none")
    group.add_argument("--max-new-tokens", type=int)
    group.add_argument(
        "--match-kl",
        type=_kl_budget,
        default="direction_ablation",
        help="'direction_ablation' (default), a KL budget in nats, or 'none'",
    )
    group.add_argument("--max-strength", type=float, default=2.0)
    group.add_argument(
        "--select",
        choices=RULES,
        default="compliance",
        help="strength below the KL ceiling: the most judged compliance on the validation "
        "prompts (default) or the ceiling itself ('kl', no generation)",
    )
    group.add_argument(
        "--strength-fractions",
        type=float,
        nargs="+",
        help="fractions of the KL ceiling judged by --select compliance (default 0.5 0.75 1)",
    )
    for flag, text in (
        ("--validation-harmful", "harmful prompts for choosing strengths (default: shipped)"),
        ("--validation-harmless", "harmless prompts for choosing strengths"),
    ):
        group.add_argument(flag, type=Path, help=text)
    group.add_argument("--n-validation", type=int, help="validation prompts per side")
    group.add_argument(
        "--judge",
        type=_judge_name,
        default="classifier",
        help="compliance judge: classifier (default), markers, or a hub judge hf:[KIND:]MODEL "
        "(KIND: harmbench, llamaguard, strongreject; docs/judge.md)",
    )
    group.add_argument("--n-questions", type=int, help="capability questions (0: skip)")
    group.add_argument(
        "--no-detect",
        action="store_true",
        help="skip the detectability columns (an activation monitor watching each method)",
    )
    _add_damage_options(group, "the KL budget (--match-kl)")
    group.add_argument(
        "--xstest",
        metavar="PATH",
        help="also measure over-refusal: an XSTest-style CSV (columns prompt, label safe/unsafe; "
        "e.g. XSTest's xstest_prompts.csv) or 'shipped' (the package's own 24 + 24); off by "
        "default, since it adds two generation passes per method",
    )
    group.add_argument("--n-xstest", type=int, help="over-refusal prompts per class (default all)")
    group.add_argument(
        "--gate-neighbours",
        type=int,
        help="nearest training prompts listed for the benign prompts that open a gated map's "
        "gate most (default 0: none; each costs a pass over the training prompts up to the "
        "map's layer)",
    )
    _add_map_options(group)
    group.add_argument(
        "--methods",
        nargs="+",
        choices=[*COMPARED, "all"],
        default=list(HEADLINE),
        help=f"default: {' '.join(HEADLINE)}; 'all': every method (each costs minutes)",
    )


def _add_sweep(commands: Any) -> None:
    sweep = commands.add_parser(
        "sweep", help="layers, pairs, k and strength; no generation unless --judged"
    )
    _add_common(sweep)
    group = sweep.add_argument_group("sweep")
    group.add_argument("--layers", type=_layers, help="layers to scan (default: all)")
    group.add_argument(
        "--judged",
        action="store_true",
        help="also judge greedy harmful completions at the references and every layer and pair "
        "(a generation pass each) and pick the best placement by judged compliance",
    )
    group.add_argument("--max-new-tokens", type=int, help="completion length (with --judged)")
    group.add_argument(
        "--judge",
        type=_judge_name,
        help="compliance judge (with --judged; default: classifier; names as for compare)",
    )
    group.add_argument("--no-pairs", action="store_true", help="skip adjacent pairs")
    group.add_argument("--sequential", action="store_true", help="refit pairs sequentially")
    group.add_argument("--k-grid", type=int, nargs="+")
    group.add_argument("--strengths", type=float, nargs="+")
    group.add_argument("--method", choices=SWEPT, default="ot_selective")
    group.add_argument("--direction-layer", type=int)
    group.add_argument(
        "--kl-budget",
        type=_sweep_kl_budget,
        default="direction_ablation",
        help="'direction_ablation' (default) or a KL budget in nats for picking the best point",
    )
    _add_damage_options(group, "--kl-budget")
    _add_map_options(group)


def _add_damage_options(group: argparse._ArgumentGroup, budget: str) -> None:
    """What a damage budget bounds, and the KL threshold of the share-above measure."""
    group.add_argument(
        "--match-measure",
        choices=MATCH_MEASURES,
        default="mean",
        help=f"what {budget} bounds, over the harmless prompts' first-token KL: the mean "
        "(default), median, p90 (90th percentile) or share_above (the share of prompts above "
        "--kl-threshold; a numeric budget is then a share in (0, 1])",
    )
    group.add_argument(
        "--kl-threshold",
        type=float,
        default=KL_THRESHOLD,
        help=f"nats above which a harmless prompt counts as moved (default {KL_THRESHOLD:g})",
    )


def _add_fit(commands: Any) -> None:
    fit = commands.add_parser("fit", help="fit one method and save it as an InterventionSet")
    _add_common(fit)
    group = fit.add_argument_group("fit")
    group.add_argument(
        "--method", choices=[m for m in METHODS if m != "none"], default="ot_selective"
    )
    group.add_argument(
        "--layers",
        type=_selective_layers,
        default="auto",
        help="'auto' (default: as in compare, the W2² / variance argmax for the selective "
        "methods, the middle layer for direction_ablation), 'middle', or a list",
    )
    group.add_argument("--direction-layer", type=int)
    group.add_argument("--no-sequential", action="store_true")
    _add_map_options(group)


def _add_generate(commands: Any) -> None:
    gen = commands.add_parser("generate", help="completions under a saved InterventionSet")
    _add_common(gen)
    group = gen.add_argument_group("generate")
    group.add_argument("--map", type=Path, required=True, help="folder written by `fit`")
    group.add_argument("--prompt", action="append", default=[], help="an instruction (repeat)")
    group.add_argument("--prompts", type=Path, help="a prompt file (JSON/JSONL/CSV/text)")
    group.add_argument("--strength", type=float)
    group.add_argument("--max-new-tokens", type=int, default=64)
    group.add_argument("--with-unmodified", action="store_true", help="also print the original")


def _add_monitor(commands: Any) -> None:
    monitor = commands.add_parser(
        "monitor", help="AUROC / TPR at 1%% FPR of an activation monitor against each method"
    )
    _add_common(monitor)
    group = monitor.add_argument_group("methods")
    group.add_argument(
        "--layers",
        type=_selective_layers,
        help="selective layers, as in compare: 'auto' (default; with --strengths-from, the "
        "compare run's layers), 'middle', or e.g. 14, 11,14, 10-15",
    )
    group.add_argument(
        "--direction-layer",
        type=int,
        help="layer of the refusal direction (default: the middle one; with --strengths-from, "
        "the compare run's)",
    )
    group.add_argument(
        "--methods",
        nargs="+",
        metavar="METHOD",
        default=list(MONITORED),
        help=f"methods to detect (default: all): {', '.join(MONITORED)}",
    )
    group.add_argument(
        "--strengths-from",
        type=Path,
        metavar="PATH",
        help="a compare results.json (or its folder): run each method at the strength compare "
        "chose (default: strength 1)",
    )
    _add_map_options(group)
    watch = monitor.add_argument_group("monitor")
    watch.add_argument(
        "--monitor-layers",
        type=_monitor_layers,
        default="auto",
        help="monitored blocks: 'auto' (default: the last selective layer and every 2nd block "
        "after it) or e.g. 14,20-23",
    )
    watch.add_argument(
        "--hook", choices=MONITOR_HOOKS, default="resid_post", help="hook point monitored"
    )
    watch.add_argument(
        "--no-probe",
        action="store_true",
        help="skip the supervised probe baseline (trained on the training prompts)",
    )


def _judge_name(value: str) -> str:
    """``--judge``: a built-in name or ``hf:[KIND:]MODEL`` (nothing loads; an offline hub
    judge must be downloaded already)."""
    try:
        check_judge_name(value, "--judge")
        if value.startswith("hf:"):  # offline and not downloaded: say so before any work
            check_available(value)
    except (ValueError, FileNotFoundError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return value


def _add_read(commands: Any) -> None:
    read = commands.add_parser(
        "read", help="blind reading of a compare report: export parts, score readers' labels"
    )
    steps = read.add_subparsers(dest="read_command", required=True)
    export = steps.add_parser(
        "export", help="write shuffled, blind parts for readers (OUT/readers) and the key"
    )
    export.add_argument("report", type=Path, help="a compare report folder")
    export.add_argument("out", type=Path, help="new folder: readers/ (hand out) and key.json")
    export.add_argument("--parts", type=int, default=1, help="readers to share the items among")
    export.add_argument("--seed", type=int, default=0, help="seed of the shuffle and the ids")
    export.add_argument("--methods", nargs="+", help="only these methods (default: all)")
    export.add_argument("--include-harmless", action="store_true", help="also the harmless answers")
    export.add_argument("--force", action="store_true", help="replace a folder we did not write")
    score = steps.add_parser(
        "score", help="read rates, paired differences and agreement; adds them to the report"
    )
    score.add_argument("report", type=Path, help="the compare report that was exported")
    score.add_argument("labels", type=Path, nargs="+", help="JSON-lines label files")
    score.add_argument("--key", type=Path, help="the export's key.json (default: found nearby)")
    score.add_argument("--baseline", help="method to pair with (default: direction_ablation)")
    score.add_argument(
        "--allow-missing", action="store_true", help="score even if some items lack a label"
    )
    score.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")


def _run_read(args: argparse.Namespace) -> None:
    """``read export`` / ``read score`` (``eval.reading``, ``eval.reading_score``)."""
    from .eval.reading import export_reading
    from .eval.reading_score import BEGIN, END, read_markdown, score_reading, write_read_section

    if args.read_command == "export":
        out = export_reading(
            args.report,
            args.out,
            parts=args.parts,
            seed=args.seed,
            methods=args.methods,
            harmless=args.include_harmless,
            overwrite=args.force,
        )
        print(f"Hand {out / 'readers'} to the readers; keep {out / 'key.json'} from them.")
        return
    record = score_reading(
        args.report,
        args.labels,
        key=args.key,
        baseline=args.baseline,
        allow_missing=args.allow_missing,
        seed=args.seed,
    )
    path = write_read_section(args.report, record)
    print(read_markdown(record).replace(BEGIN, "").replace(END, "").strip())
    print(f"Wrote {path} and the reading section of {args.report / 'report.md'}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="tl-ot-ablation",
        description="Refusal ablation by Gaussian optimal transport, compared with direction "
        "ablation (TransformerLens 4.x).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_add_compare, _add_sweep, _add_fit, _add_generate, _add_monitor, _add_read):
        add(commands)
    return parser


def _job_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The ``JobSettings`` fields given on the command line (the rest keep their defaults)."""
    fields = {
        "n_components": args.n_components,
        "reg": args.reg,
        "estimator": args.estimator,
        "gate": args.gate,
        "preserve_norm": args.preserve_norm,
        "batch_size": args.batch_size,
        "system": args.system,
        "seed": args.seed,
        "n_train": args.n_train,
        "positions": args.positions,
        "allow_control_tokens": args.allow_control_tokens,
    }
    return {key: value for key, value in fields.items() if value is not None}


def _settings(args: argparse.Namespace, compared: Any = None) -> JobSettings:
    """The command's settings, checked before anything loads (a bad value raises here);
    ``compared`` is ``record.compare_strengths`` output for ``monitor --strengths-from``."""
    preset = "quick" if args.quick else "default"
    fields = _job_fields(args)
    if args.command == "fit":
        return FitSettings.preset(
            preset,
            **fields,
            method=args.method,
            layers=args.layers,
            direction_layer=args.direction_layer,
            sequential=not args.no_sequential,
        )
    optional = {"n_eval": args.n_eval}
    if args.command == "monitor":
        return _monitor_settings(args, preset, fields, optional, compared)
    if args.command == "sweep":
        if not args.judged and (args.judge is not None or args.max_new_tokens is not None):
            raise UserInputError("--judge and --max-new-tokens only apply to a --judged sweep")
        optional |= {
            "k_grid": None if args.k_grid is None else tuple(args.k_grid),
            "strengths": None if args.strengths is None else tuple(args.strengths),
            "max_new_tokens": args.max_new_tokens,
        }
        return SweepSettings.preset(
            preset,
            **fields,
            **{k: v for k, v in optional.items() if v is not None},
            layers=args.layers,
            pairs=SweepSettings.preset(preset).pairs and not args.no_pairs,
            sequential=args.sequential,
            method=args.method,
            direction_layer=args.direction_layer,
            kl_budget=args.kl_budget,
            judged=args.judged,
            judge=args.judge or "classifier",
            match_measure=args.match_measure,
            kl_threshold=args.kl_threshold,
        )
    optional |= {
        "layers": args.layers,
        "max_new_tokens": args.max_new_tokens,
        "n_questions": args.n_questions,
        "n_validation": args.n_validation,
        "n_xstest": args.n_xstest,
        "gate_neighbours": args.gate_neighbours,
        "strength_fractions": None
        if args.strength_fractions is None
        else tuple(args.strength_fractions),
    }
    return CompareSettings.preset(
        preset,
        **fields,
        **{k: v for k, v in optional.items() if v is not None},
        direction_layer=args.direction_layer,
        strength=args.strength,
        match_kl=args.match_kl,
        max_strength=args.max_strength,
        select=args.select,
        methods=COMPARED if "all" in args.methods else tuple(args.methods),
        judge=args.judge,
        detect=not args.no_detect,
        match_measure=args.match_measure,
        kl_threshold=args.kl_threshold,
    )


def _monitor_settings(
    args: argparse.Namespace,
    preset: str,
    fields: dict[str, Any],
    optional: dict[str, Any],
    compared: Any = None,
) -> MonitorSettings:
    """``monitor``'s settings; with ``--strengths-from`` (``compared``), the strengths (and,
    unless given, the layers) of that compare run."""
    layers: Any = args.layers
    direction_layer = args.direction_layer
    strengths: dict[str, float] = {}
    if compared is not None:
        record, strengths, _ = compared
        layers = record.settings.layers if layers is None else layers
        if direction_layer is None:
            direction_layer = record.settings.direction_layer
    settings = MonitorSettings.preset(
        preset,
        **fields,
        **{k: v for k, v in optional.items() if v is not None},
        layers="auto" if layers is None else layers,
        direction_layer=direction_layer,
        methods=tuple(args.methods),
        monitor_layers=args.monitor_layers,
        hook=args.hook,
        probe=not args.no_probe,
        strengths=strengths,
    )
    if compared is not None and (differ := settings.fit_differences(compared[0].settings)):
        warnings.warn(
            f"WARNING: {', '.join(differ)} differ from the compare run in {compared[2]}, whose "
            "strengths were matched for the maps it fitted",
            stacklevel=2,
        )
    return settings


def _load(args: argparse.Namespace) -> Any:
    if args.model == "tiny":
        from .lens.testing import tiny_model

        return tiny_model(n_ctx=512)
    return load_model(args.model, device=args.device, dtype=DTYPES[args.dtype])


@dataclass(frozen=True)
class _Job:
    """What a job command runs on, all checked before the model loads."""

    settings: Any
    prompts: JobPrompts
    out: Path
    strengths_source: str | None = None


def _prompts(args: argparse.Namespace, settings: JobSettings) -> JobPrompts:
    return JobPrompts.shipped(
        settings,
        harmful=args.harmful,
        harmless=args.harmless,
        eval_harmful=args.eval_harmful,
        eval_harmless=args.eval_harmless,
        texts=args.texts,
        questions=args.questions,
        validation_harmful=getattr(args, "validation_harmful", None),
        validation_harmless=getattr(args, "validation_harmless", None),
        xstest=getattr(args, "xstest", None),
        allow_overlap=args.allow_overlap or args.command == "fit",
    )


def _command_line(argv: Sequence[str] | None) -> str:
    return "tl-ot-ablation " + shlex.join(list(sys.argv[1:] if argv is None else argv))


def run_compare(args: argparse.Namespace, job: _Job, model: Any, command: str) -> Path:
    """``compare``: the job, then the table and the verdict."""
    record, _ = compare_job(
        model,
        job.prompts,
        job.settings,
        job.out,
        model_name=args.model,
        command=command,
        preset="quick" if args.quick else "default",
        plots=not args.no_plots,
        overwrite=args.force,
        progress=not args.no_progress,
    )
    print(comparison_table(record))
    print()
    print(verdict(record))
    print(f"\nReport: {job.out / 'report.md'}")
    return job.out


def run_sweep(args: argparse.Namespace, job: _Job, model: Any, command: str) -> Path:
    """``sweep``: the job, then the best placement."""
    result, record, _ = sweep_job(
        model,
        job.prompts,
        job.settings,
        job.out,
        model_name=args.model,
        command=command,
        plots=not args.no_plots,
        overwrite=args.force,
        progress=not args.no_progress,
    )
    best = result.best
    if best is None:
        print(f"No placement stayed within the KL budget {result.budget:.4g}.")
    else:
        judged = "" if best.compliance is None else f"judged compliance {best.compliance:.2f}, "
        print(
            f"Best within KL {result.budget:.4g}: layers {list(best.layers)}, {judged}refusal "
            f"log-odds {best.refusal_score:.2f}, KL {best.kl_harmless:.3g} "
            f"({record.sweet_spot_depth_fraction:.0%} of depth)."
        )
    print(f"Report: {job.out / 'report.md'}")
    return job.out


def run_fit(args: argparse.Namespace, job: _Job, model: Any, command: str) -> Path:
    """``fit``: the job, then what was fitted and where it was saved."""
    fitted, choice, folder = fit_job(
        model,
        job.prompts,
        job.settings,
        job.out,
        overwrite=args.force,
        progress=not args.no_progress,
    )
    if choice.how == "w2_relative":
        print(
            f"layer chosen from the training statistics (largest W2² / variance): {choice.layers}"
        )
    print(f"{fitted}\nSaved to {folder}")
    return folder


def run_monitor(args: argparse.Namespace, job: _Job, model: Any, command: str) -> Path:
    """``monitor``: the job, then the detection table."""
    record, _ = monitor_job(
        model,
        job.prompts,
        job.settings,
        job.out,
        model_name=args.model,
        command=command,
        strengths_source=job.strengths_source,
        plots=not args.no_plots,
        overwrite=args.force,
        progress=not args.no_progress,
    )
    print(detection_table(record))
    print(f"\nReport: {job.out / 'report.md'}")
    return job.out


_BIDI_CONTROLS = "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_TERMINAL_ESCAPES = {
    ord(c): repr(c)[1:-1]  # as Python writes them: \x1b, \r, \x9b, \u202e
    for c in [*map(chr, [*range(0x20), *range(0x7F, 0xA0)]), *_BIDI_CONTROLS]
    if c not in "\n\t"
}


def _for_terminal(text: str) -> str:
    """``text`` with its control characters written as escapes (ESC, BEL, CR, the C1 codes
    such as CSI, bidi overrides), so a prompt or completion cannot recolour, retitle, clear or
    reorder the terminal; newlines and tabs are kept."""
    return text.translate(_TERMINAL_ESCAPES)


def run_generate(args: argparse.Namespace, model: Any) -> Path:
    """``generate``: completions under a saved set (and the unmodified model's), printed with
    control characters escaped when stdout is a terminal (unchanged into a file or pipe)."""
    prompts = list(args.prompt) + (load_prompts(args.prompts) if args.prompts else [])
    interventions = InterventionSet.load(args.map, model=model)
    if args.strength is not None:
        interventions = interventions.with_strength(args.strength)
    options: dict[str, Any] = {
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "system": args.system,
        "progress": not args.no_progress,
        "allow_control_tokens": args.allow_control_tokens,
    }
    edited = generate(model, prompts, fwd_hooks=interventions.fwd_hooks(), **options)
    original = generate(model, prompts, **options) if args.with_unmodified else None
    isatty = getattr(sys.stdout, "isatty", None)
    show = _for_terminal if isatty is not None and isatty() else str
    method = show(str(interventions.metadata.get("method", "edited")))
    for i, prompt in enumerate(prompts):
        print(f"### {show(prompt)}")
        if original is not None:
            print(f"[unmodified] {show(original[i])}")
        print(f"[{method}] {show(edited[i])}\n")
    return args.map


JOBS: dict[str, Callable[[argparse.Namespace, _Job, Any, str], Path]] = {
    "compare": run_compare,
    "sweep": run_sweep,
    "fit": run_fit,
    "monitor": run_monitor,
}
BAD_INPUT_ERRORS = (UserInputError, FileNotFoundError, FileExistsError)
"""What bad input raises: one line, exit 2. Anything else not listed here or in ``main`` (a
plain ``ValueError`` or ``TypeError`` from inside the package or torch) is a bug in the
package, not the user's input: it propagates, traceback and all, after a line asking to report
it."""
REPORT_BUG = (
    "this is a bug in tl_ot_ablation: please report it with the command line and the "
    "traceback below"
)


def _check_generate_strength(strength: float | None) -> None:
    """``generate --strength``: finite and >= 0, as every intervention requires."""
    if strength is not None and not (math.isfinite(strength) and strength >= 0):
        raise UserInputError(
            f"--strength must be a finite number >= 0 (0: no edit, 1: the fitted edit), got "
            f"{strength}"
        )


def _check_before_loading(args: argparse.Namespace) -> _Job | None:
    """Everything that can be checked without the model: settings, device, files, the output
    folder."""
    if args.batch_size < 1:
        raise UserInputError(f"--batch-size must be >= 1, got {args.batch_size}")
    resolve_device(args.device, option="--device")
    if args.command == "generate":
        if not args.prompt and not args.prompts:
            raise UserInputError("give --prompt TEXT (repeatable) or --prompts FILE")
        if args.max_new_tokens < 1:
            raise UserInputError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
        _check_generate_strength(args.strength)
        InterventionSet.load(args.map)  # a broken map fails before the model loads
        return None
    compared = None
    if args.command == "monitor" and args.strengths_from is not None:
        compared = compare_strengths(args.strengths_from, args.methods)
    settings = _settings(args, compared)
    default = Path("maps") / settings.method if isinstance(settings, FitSettings) else None
    out = args.out or default or Path(f"reports/{args.command}")
    check_output(out, overwrite=args.force)
    prompts = _prompts(args, settings)
    if args.command == "monitor":
        check_monitor_prompts(prompts)
    return _Job(settings, prompts, out, None if compared is None else str(compared[2]))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tl-ot-ablation`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    name = f"tl-ot-ablation {args.command}"
    try:
        if args.command == "read":  # no model: export or score a blind reading
            _run_read(args)
            return 0
        job = _check_before_loading(args)
        if job is None:
            run_generate(args, _load(args))
        else:  # the output held from before the model loads; layers checked against it
            with atomic.claim(job.out):
                model = _load(args)
                job.settings.check_layers(model.cfg.n_layers)
                JOBS[args.command](args, job, model, _command_line(argv))
    except BAD_INPUT_ERRORS as error:  # bad input: say what, not where
        print(f"{name}: error: {error}", file=sys.stderr)
        return BAD_INPUT
    except KeyboardInterrupt:
        print(f"{name}: interrupted; no output was half-written", file=sys.stderr)
        return INTERRUPTED
    except (RuntimeError, OSError, MemoryError) as error:
        print(f"{name}: failed: {type(error).__name__}: {error}", file=sys.stderr)
        return FAILED
    except Exception:  # a bug: say so, then let Python print the traceback (exit code 1)
        print(f"{name}: {REPORT_BUG}", file=sys.stderr)
        raise
    return 0
