"""The ``tl-ot-ablation`` argument parser: every command, its options, their defaults and help.

Only the parser: values with a syntax of their own are converted by ``arg_types``, and
turning the parsed arguments into settings is ``to_settings``'s job, so ``--help`` and the
defaults a user sees are read here in one place.
"""

import argparse
from pathlib import Path
from typing import Any

from ..eval.damage import KL_THRESHOLD, MATCH_MEASURES
from ..eval.methods import COMPARED, HEADLINE, METHODS, SWEPT
from ..eval.reading import KINDS as READ_KINDS
from ..eval.settings import MONITOR_HOOKS, MONITORED, JobSettings
from ..eval.strength import RULES
from ..lens.models import DEFAULT_MODEL
from .arg_types import (
    compare_layers,
    group_or_none,
    judge_name,
    kl_budget,
    layer_list,
    monitor_layers,
    selective_layers,
    sweep_kl_budget,
)
from .model import DTYPES

# What add_argument_group returns: argparse has no public name for its class.
ArgumentGroup = argparse._ArgumentGroup


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
    run.add_argument(
        "--no-cache",
        action="store_true",
        help="neither read nor store compare's outputs (validation measurements, held-out "
        "evaluations) in the result cache ($TL_OT_ABLATION_RESULT_CACHE, else "
        "~/.cache/tl_ot_ablation/results)",
    )
    run.add_argument(
        "--clear-cache", action="store_true", help="empty the result cache before running"
    )


def _add_map_options(group: ArgumentGroup) -> None:
    """The map fields every job shares (defaults: ``JobSettings``, the recommended map)."""
    defaults = JobSettings().map
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
        type=compare_layers,
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
        type=kl_budget,
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
        "--early-stop",
        type=group_or_none,
        metavar="N",
        help="judge validation completions N prompts at a time and stop a layer or strength "
        "candidate once it can no longer be chosen (exact; off by default: on the package's "
        "prompts it saved nothing); 'none': judge every prompt in one pass (the default)",
    )
    group.add_argument(
        "--judge",
        type=judge_name,
        default="classifier",
        help="compliance judge: classifier (default), markers, reader (the embedded 1.5B model "
        "reads each answer: closer to blind readings, ~1.4 s an answer on a CPU), or a hub "
        "judge hf:[KIND:]MODEL (KIND: harmbench, llamaguard, strongreject; docs/judge.md)",
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
    group.add_argument("--layers", type=layer_list, help="layers to scan (default: all)")
    group.add_argument(
        "--judged",
        action="store_true",
        help="also judge greedy harmful completions at the references and every layer and pair "
        "(a generation pass each) and pick the best placement by judged compliance",
    )
    group.add_argument("--max-new-tokens", type=int, help="completion length (with --judged)")
    group.add_argument(
        "--judge",
        type=judge_name,
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
        type=sweep_kl_budget,
        default="direction_ablation",
        help="'direction_ablation' (default) or a KL budget in nats for picking the best point",
    )
    _add_damage_options(group, "--kl-budget")
    _add_map_options(group)


def _add_damage_options(group: ArgumentGroup, budget: str) -> None:
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
        type=selective_layers,
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
        type=selective_layers,
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
        type=monitor_layers,
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
    export.add_argument(
        "--kinds",
        nargs="+",
        choices=READ_KINDS,
        help="the answers to read, by prompt kind (default: harmful; xstest_safe / "
        "xstest_unsafe for a report run with --xstest)",
    )
    export.add_argument(
        "--changed",
        action="store_true",
        help="only prompts where some method's answer differs from the unmodified model's "
        "(every method's answer to them, the unmodified one included)",
    )
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
