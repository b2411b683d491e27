"""Command-line arguments → the job's settings object (``FitSettings``, ``SweepSettings``,
``CompareSettings``, ``MonitorSettings``), checked before anything loads.

The one place that knows which flag fills which settings field: ``settings_from_args`` (with
its private helpers here) is the only code that builds settings from ``argparse`` arguments,
so a change to the settings classes touches this module and nothing else in the CLI.
"""

import argparse
import dataclasses
import warnings
from typing import Any

from ..core.errors import UserInputError
from ..eval.methods import COMPARED
from ..eval.settings import (
    CompareSettings,
    FitSettings,
    JobSettings,
    MonitorSettings,
    SweepSettings,
)


def _job_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The ``JobSettings`` fields given on the command line (the rest keep their defaults):
    the map (``MapSpec``) and how prompts are run (``CollectOptions``) as objects."""

    def given(*names: str) -> dict[str, Any]:
        return {name: getattr(args, name) for name in names if getattr(args, name) is not None}

    defaults = JobSettings()
    return {
        "map": dataclasses.replace(
            defaults.map, **given("n_components", "reg", "estimator", "gate", "preserve_norm")
        ),
        "collect": dataclasses.replace(
            defaults.collect, **given("batch_size", "system", "positions")
        ),
        **given("seed", "n_train", "allow_control_tokens"),
    }


def settings_from_args(args: argparse.Namespace, compared: Any = None) -> JobSettings:
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
        "early_stop": args.early_stop,
        "strength_fractions": None
        if args.strength_fractions is None
        else tuple(args.strength_fractions),
    }
    given = {k: v for k, v in optional.items() if v is not None}
    if given.get("early_stop") == "none":  # asked for: never stop (None means "not given")
        given["early_stop"] = None
    return CompareSettings.preset(
        preset,
        **fields,
        **given,
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
