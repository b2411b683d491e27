"""Command-line arguments to settings (``cli.to_settings``): defaults and the opt-ins they carry."""

import pytest

from tl_ot_ablation.eval.methods import METHODS


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], ("none", "direction_ablation", "ot_selective")),
        (["--methods", "all"], tuple(METHODS)),
        (["--methods", "actadd", "direction_ablation"], ("none", "direction_ablation", "actadd")),
    ],
)
def test_compare_runs_the_headline_methods_unless_asked(flags, expected) -> None:
    from tl_ot_ablation.cli import build_parser
    from tl_ot_ablation.cli.to_settings import settings_from_args

    settings = settings_from_args(build_parser().parse_args(["compare", *flags]))
    assert settings.resolve(28).methods == expected


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], "judged"),
        (["--quick"], "auto"),
        (["--quick", "--layers", "judged"], "judged"),
        (["--layers", "auto"], "auto"),
        (["--layers", "11,14"], [11, 14]),
    ],
)
def test_compare_layers_default_to_judged_and_quick_to_auto(flags, expected) -> None:
    from tl_ot_ablation.cli import build_parser
    from tl_ot_ablation.cli.to_settings import settings_from_args

    assert settings_from_args(build_parser().parse_args(["compare", *flags])).layers == expected


def test_the_settings_carry_the_opt_in() -> None:
    from tl_ot_ablation.cli import build_parser
    from tl_ot_ablation.cli.to_settings import settings_from_args
    from tl_ot_ablation.eval.settings import CompareSettings, JobSettings

    assert JobSettings().allow_control_tokens is False
    for command in ("compare", "sweep", "fit", "monitor"):
        args = build_parser().parse_args([command, "--allow-control-tokens"])
        assert settings_from_args(args).allow_control_tokens is True
        assert (
            settings_from_args(build_parser().parse_args([command])).allow_control_tokens is False
        )
    generate = ["generate", "--map", "m", "--prompt", "x", "--allow-control-tokens"]
    assert build_parser().parse_args(generate).allow_control_tokens is True
    settings = CompareSettings(allow_control_tokens=True)
    assert CompareSettings.from_json(settings.to_json()) == settings
