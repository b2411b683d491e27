"""``tl-ot-ablation`` (also ``python -m tl_ot_ablation``): compare, sweep, fit, generate.

With no options, ``compare`` fits every method on the package's own 64 + 64 training prompts
and evaluates it on the disjoint 32 + 32 held-out ones with the embedded default model, at
matched harmless KL, and writes a report folder. ``--quick`` is a smaller preset.
"""

import argparse
import shlex
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .eval.compare import (
    METHODS,
    CompareSettings,
    EvalPrompts,
    comparison_record,
    overlap,
    run_comparison,
)
from .eval.report import comparison_table, verdict, write_compare_report, write_sweep_report
from .eval.selection import layers_by_w2, w2_by_layer
from .eval.sweep import SweepSettings, run_sweep
from .lens.collect import hook_name
from .lens.fit import (
    collect_every_layer,
    fit_actadd,
    fit_direction_ablation,
    fit_ot_ablation,
)
from .lens.generation import generate
from .lens.intervention_set import InterventionSet
from .lens.models import DEFAULT_MODEL, load_model
from .lens.prompts import default_prompts, load_prompts, plain_text

DEFAULT_VARIANT = {"estimator": "ledoit_wolf", "gate": "posterior"}
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True)
class Preset:
    n_train: int
    n_eval: int
    n_texts: int
    max_new_tokens: int
    bisection_steps: int
    layer_stride: int
    pairs: bool
    k_grid: tuple[int, ...]
    strengths: tuple[float, ...]


PRESETS = {
    "default": Preset(64, 32, 8, 32, 6, 1, True, (8, 16, 32, 64, 128), (0.5, 1.0, 1.5, 2.0)),
    "quick": Preset(32, 16, 4, 16, 4, 2, False, (16, 64), (0.5, 1.0, 2.0)),
}


def _add_common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and prompts")
    group.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="embedded model name, hub name, local .gguf file or folder; 'tiny' is a "
        f"random-weight test model (default: {DEFAULT_MODEL})",
    )
    group.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    group.add_argument("--device", default=None, help="e.g. cpu, cuda, cuda:1 (default: auto)")
    group.add_argument("--harmful", type=Path, help="training harmful prompts (JSON/CSV/text)")
    group.add_argument("--harmless", type=Path, help="training harmless prompts")
    group.add_argument("--eval-harmful", type=Path, help="held-out harmful prompts")
    group.add_argument("--eval-harmless", type=Path, help="held-out harmless prompts")
    group.add_argument("--texts", type=Path, help="plain-text paragraphs for perplexity")
    group.add_argument("--n-train", type=int, help="use the first N training prompts per side")
    group.add_argument("--n-eval", type=int, help="use the first N held-out prompts per side")
    group.add_argument("--system", help="system prompt for the chat template")
    group.add_argument(
        "--allow-overlap",
        action="store_true",
        help="evaluate even when held-out prompts also appear in the training prompts",
    )
    run = parser.add_argument_group("run")
    run.add_argument("--quick", action="store_true", help="the small preset (< 5 min on 2 cores)")
    run.add_argument("--batch-size", type=int, default=32, help="prompts per forward pass")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", type=Path, help="report folder (default: reports/<command>)")
    run.add_argument("--no-plots", action="store_true")
    run.add_argument("--no-progress", action="store_true")


def _add_map_options(group: argparse._ArgumentGroup) -> None:
    """The OT map variants (issue 6): covariance estimator, gate, norm preservation. The
    defaults are the variant that did best at matched damage (experiments/README.md)."""
    group.add_argument(
        "--estimator", choices=["ridge", "oas", "ledoit_wolf"], default=DEFAULT_VARIANT["estimator"]
    )
    group.add_argument(
        "--gate", choices=["none", "posterior", "hard"], default=DEFAULT_VARIANT["gate"]
    )
    group.add_argument("--preserve-norm", action="store_true")


def _layers(value: str) -> list[int]:
    """``"14"``, ``"11,14"`` or ``"10-15"`` → layer list."""
    layers: list[int] = []
    if not value.replace(",", "").replace("-", "").isdigit():
        raise argparse.ArgumentTypeError(f"expected layers like 14, 11,14 or 10-15, got {value!r}")
    for part in value.split(","):
        if "-" in part:
            start, stop = part.split("-")
            layers += range(int(start), int(stop) + 1)
        else:
            layers.append(int(part))
    return layers


def _selective_layers(value: str) -> list[int] | str:
    """``"auto"``, ``"middle"`` or a layer list (see ``_layers``)."""
    return value if value in ("auto", "middle") else _layers(value)


def _kl_budget(value: str) -> str | float | None:
    if value in ("direction_ablation", "none"):
        return None if value == "none" else value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'direction_ablation', 'none' or a KL in nats, got {value!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tl-ot-ablation",
        description="Refusal ablation by Gaussian optimal transport, compared with direction "
        "ablation (TransformerLens 4.x).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    compare = commands.add_parser("compare", help="all methods side by side, at matched KL")
    _add_common(compare)
    group = compare.add_argument_group("methods")
    group.add_argument(
        "--layers",
        type=_selective_layers,
        default="auto",
        help="selective layers: 'auto' (default: the layer where harmful and harmless training "
        "activations are furthest apart, by W2² / variance), 'middle', or e.g. 14, 11,14, 10-15",
    )
    group.add_argument("--direction-layer", type=int, help="layer of the refusal direction")
    group.add_argument("-k", "--n-components", type=int, default=64)
    group.add_argument("--reg", type=float, default=1e-3)
    group.add_argument("--strength", type=float, default=1.0, help="used with --match-kl none")
    group.add_argument("--positions", choices=["post_instruction", "last", "all"])
    group.add_argument("--max-new-tokens", type=int)
    group.add_argument(
        "--match-kl",
        type=_kl_budget,
        default="direction_ablation",
        help="'direction_ablation' (default), a KL budget in nats, or 'none'",
    )
    group.add_argument("--max-strength", type=float, default=2.0)
    _add_map_options(group)
    group.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))

    sweep = commands.add_parser("sweep", help="layers, pairs, k and strength; no generation")
    _add_common(sweep)
    group = sweep.add_argument_group("sweep")
    group.add_argument("--layers", type=_layers, help="layers to scan (default: all)")
    group.add_argument("--no-pairs", action="store_true", help="skip adjacent pairs")
    group.add_argument("--sequential", action="store_true", help="refit pairs sequentially")
    group.add_argument("-k", "--n-components", type=int, default=64)
    group.add_argument("--k-grid", type=int, nargs="+")
    group.add_argument("--strengths", type=float, nargs="+")
    group.add_argument("--method", choices=["ot", "mean_shift"], default="ot")
    group.add_argument("--direction-layer", type=int)
    group.add_argument("--kl-budget", type=_kl_budget, default="direction_ablation")
    group.add_argument("--positions", choices=["post_instruction", "last", "all"])
    _add_map_options(group)

    fit = commands.add_parser("fit", help="fit one method and save it as an InterventionSet")
    _add_common(fit)
    group = fit.add_argument_group("fit")
    group.add_argument(
        "--method",
        choices=["ot", "mean_shift", "per_neuron_ot", "direction_ablation", "actadd"],
        default="ot",
    )
    group.add_argument(
        "--layers",
        type=_selective_layers,
        default="auto",
        help="'auto' (default: as in compare, the W2² / variance argmax for the transport "
        "methods, the middle layer for direction_ablation and actadd), 'middle', or a list",
    )
    group.add_argument("-k", "--n-components", type=int, default=64)
    group.add_argument("--reg", type=float, default=1e-3)
    group.add_argument("--positions", choices=["post_instruction", "last", "all"])
    group.add_argument("--no-sequential", action="store_true")
    _add_map_options(group)

    gen = commands.add_parser("generate", help="completions under a saved InterventionSet")
    _add_common(gen)
    group = gen.add_argument_group("generate")
    group.add_argument("--map", type=Path, required=True, help="folder written by `fit`")
    group.add_argument("--prompt", action="append", default=[], help="an instruction (repeat)")
    group.add_argument("--prompts", type=Path, help="a prompt file (JSON/CSV/text)")
    group.add_argument("--strength", type=float)
    group.add_argument("--max-new-tokens", type=int, default=64)
    group.add_argument("--with-unmodified", action="store_true", help="also print the original")
    return parser


def _load(args: argparse.Namespace) -> Any:
    if args.model == "tiny":
        from .lens.testing import tiny_model

        return tiny_model(n_ctx=512)
    return load_model(args.model, device=args.device, dtype=DTYPES[args.dtype])


def _prompts(path: Path | None, kind: str, split: str, n: int | None) -> list[str]:
    prompts = load_prompts(path) if path else default_prompts(kind, split)  # type: ignore[arg-type]
    if n is not None:
        if n < 1:
            raise SystemExit(f"error: --n-{split} must be >= 1, got {n}")
        prompts = prompts[:n]
    return prompts


def _data(args: argparse.Namespace, preset: Preset) -> tuple[dict[str, list[str]], EvalPrompts]:
    n_train = args.n_train or preset.n_train
    n_eval = args.n_eval or preset.n_eval
    train = {
        "harmful": _prompts(args.harmful, "harmful", "train", n_train),
        "harmless": _prompts(args.harmless, "harmless", "train", n_train),
    }
    texts = load_prompts(args.texts) if args.texts else plain_text()[: preset.n_texts]
    held_out = EvalPrompts(
        _prompts(args.eval_harmful, "harmful", "eval", n_eval),
        _prompts(args.eval_harmless, "harmless", "eval", n_eval),
        texts,
    )
    shared = overlap(train["harmful"], held_out.harmful) + overlap(
        train["harmless"], held_out.harmless
    )
    if shared:
        message = (
            f"{len(shared)} held-out prompt(s) also appear in the training prompts (e.g. "
            f"{shared[0]!r}); results on them measure memorisation, not generalisation"
        )
        if not args.allow_overlap:
            raise SystemExit(f"error: {message}. Use disjoint files, or --allow-overlap.")
        warnings.warn(f"WARNING: {message}", stacklevel=1)
    return train, held_out


def _command_line(argv: Sequence[str] | None) -> str:
    return "tl-ot-ablation " + shlex.join(list(sys.argv[1:] if argv is None else argv))


def run_compare(args: argparse.Namespace, argv: Sequence[str] | None) -> Path:
    preset = PRESETS["quick" if args.quick else "default"]
    train, held_out = _data(args, preset)
    model = _load(args)
    settings = CompareSettings(
        layers=args.layers,
        direction_layer=args.direction_layer,
        n_components=args.n_components,
        reg=args.reg,
        estimator=args.estimator,
        gate=args.gate,
        preserve_norm=args.preserve_norm,
        strength=args.strength,
        positions=args.positions or "post_instruction",
        max_new_tokens=args.max_new_tokens or preset.max_new_tokens,
        batch_size=args.batch_size,
        match_kl=args.match_kl,
        max_strength=args.max_strength,
        bisection_steps=preset.bisection_steps,
        seed=args.seed,
        methods=tuple(args.methods),
        system=args.system,
    )
    progress = not args.no_progress
    comparison = run_comparison(
        model, train["harmful"], train["harmless"], held_out, settings, progress=progress
    )
    record = comparison_record(
        comparison,
        model_name=args.model,
        train=train,
        held_out=held_out,
        extra={"command": _command_line(argv), "preset": "quick" if args.quick else "default"},
    )
    clouds = None
    if not args.no_plots:
        from .lens.collect import collect_activations

        selective = comparison.interventions.get("ot_selective")
        chosen = comparison.settings.layers
        if selective is not None and isinstance(chosen, list):
            layer = chosen[0]
            name = hook_name("resid_pre", layer)
            rows = {
                kind: collect_activations(
                    model,
                    prompts,
                    name,
                    positions="last",
                    batch_size=args.batch_size,
                    system=args.system,
                    progress=False,
                )[name]
                for kind, prompts in (
                    ("harmful", held_out.harmful),
                    ("harmless", held_out.harmless),
                )
            }
            transport = selective.to("cpu")[name]
            clouds = (
                rows["harmful"],
                rows["harmless"],
                transport(rows["harmful"]),
                f"Layer {layer}, last prompt token (held-out prompts)",
            )
    completions = {name: result.completions for name, result in comparison.results.items()}
    folder = write_compare_report(
        args.out or Path("reports/compare"),
        record,
        completions,
        {"harmful": held_out.harmful, "harmless": held_out.harmless},
        command=record["command"],
        clouds=clouds,
        w2=comparison.w2_by_layer,
        plots_enabled=not args.no_plots,
    )
    print(comparison_table(record))
    print()
    print(verdict(record))
    print(f"\nReport: {folder / 'report.md'}")
    return folder


def run_sweep_command(args: argparse.Namespace, argv: Sequence[str] | None) -> Path:
    preset = PRESETS["quick" if args.quick else "default"]
    train, held_out = _data(args, preset)
    model = _load(args)
    layers = args.layers or list(range(0, model.cfg.n_layers, preset.layer_stride))
    settings = SweepSettings(
        layers=layers,
        pairs=preset.pairs and not args.no_pairs,
        sequential=args.sequential,
        n_components=args.n_components,
        k_grid=tuple(args.k_grid or preset.k_grid),
        strengths=tuple(args.strengths or preset.strengths),
        method=args.method,
        direction_layer=args.direction_layer,
        kl_budget=args.kl_budget if args.kl_budget is not None else "direction_ablation",
        estimator=args.estimator,
        gate=args.gate,
        preserve_norm=args.preserve_norm,
        positions=args.positions or "post_instruction",
        batch_size=args.batch_size,
        seed=args.seed,
        system=args.system,
    )
    result = run_sweep(
        model,
        train["harmful"],
        train["harmless"],
        held_out.harmful,
        held_out.harmless,
        settings,
        progress=not args.no_progress,
    )
    record = result.to_dict()
    record |= {"model": args.model, "command": _command_line(argv)}
    folder = write_sweep_report(
        args.out or Path("reports/sweep"),
        record,
        command=record["command"],
        plots_enabled=not args.no_plots,
    )
    best = result.best
    if best is None:
        print(f"No placement stayed within the KL budget {result.budget:.4g}.")
    else:
        print(
            f"Best within KL {result.budget:.4g}: layers {list(best.layers)}, refusal log-odds "
            f"{best.refusal_score:.2f}, KL {best.kl_harmless:.3g} "
            f"({result.sweet_spot:.0%} of depth)."
        )
    print(f"Report: {folder / 'report.md'}")
    return folder


def run_fit(args: argparse.Namespace, argv: Sequence[str] | None) -> Path:
    preset = PRESETS["quick" if args.quick else "default"]
    train, _ = _data(args, preset)
    model = _load(args)
    n_layers = model.cfg.n_layers
    options: dict[str, Any] = {
        "positions": args.positions or "post_instruction",
        "batch_size": args.batch_size,
        "system": args.system,
        "progress": not args.no_progress,
    }
    harmful, harmless = train["harmful"], train["harmless"]
    layers = [n_layers // 2] if args.layers in ("auto", "middle") else args.layers
    cached: dict[str, Any] = {}
    if args.layers == "auto" and args.method not in ("direction_ablation", "actadd"):
        # One pass over every layer ranks them, and the fit below reuses it.
        estimator = "ridge" if args.method == "per_neuron_ot" else args.estimator
        training = collect_every_layer(model, harmful, harmless, estimator=estimator, **options)
        ranking = w2_by_layer(
            training.stats, n_layers, n_components=args.n_components, reg=args.reg
        )
        layers = layers_by_w2(ranking)
        cached = training.cached()
        print(f"layer chosen from the training statistics (largest W2² / variance): {layers}")
    if args.method == "direction_ablation":
        fitted = fit_direction_ablation(model, harmful, harmless, layer=layers[0], **options)
    elif args.method == "actadd":
        fitted = fit_actadd(model, harmful, harmless, layer=layers[0], **options)
    else:
        fitted = fit_ot_ablation(
            model,
            harmful,
            harmless,
            layers=layers,
            method=args.method,
            n_components=args.n_components,
            reg=args.reg,
            sequential=not args.no_sequential,
            **options,
            **cached,
            **(
                {}
                if args.method == "per_neuron_ot"
                else {
                    "estimator": args.estimator,
                    "gate": args.gate,
                    "preserve_norm": args.preserve_norm,
                }
            ),
        )
    folder = fitted.save(args.out or Path("maps") / args.method)
    print(f"{fitted}\nSaved to {folder}")
    return folder


def run_generate(args: argparse.Namespace, argv: Sequence[str] | None) -> Path:
    prompts = list(args.prompt) + (load_prompts(args.prompts) if args.prompts else [])
    if not prompts:
        raise SystemExit("error: give --prompt TEXT (repeatable) or --prompts FILE")
    model = _load(args)
    interventions = InterventionSet.load(args.map, model=model)
    if args.strength is not None:
        interventions = interventions.with_strength(args.strength)
    options: dict[str, Any] = {
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "system": args.system,
        "progress": not args.no_progress,
    }
    edited = generate(model, prompts, fwd_hooks=interventions.fwd_hooks(), **options)
    original = generate(model, prompts, **options) if args.with_unmodified else None
    for i, prompt in enumerate(prompts):
        print(f"### {prompt}")
        if original is not None:
            print(f"[unmodified] {original[i]}")
        print(f"[{interventions.metadata.get('method', 'edited')}] {edited[i]}\n")
    return args.map


COMMANDS = {
    "compare": run_compare,
    "sweep": run_sweep_command,
    "fit": run_fit,
    "generate": run_generate,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tl-ot-ablation`` console script."""
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise SystemExit(f"error: --batch-size must be >= 1, got {args.batch_size}")
    torch.manual_seed(args.seed)
    try:
        COMMANDS[args.command](args, argv)
    except (ValueError, FileNotFoundError) as error:  # bad input: say what, not where
        print(f"tl-ot-ablation {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0
