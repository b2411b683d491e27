"""The argument parser (``cli.parser``): the compare and sweep flags."""

import pytest

from tl_ot_ablation.cli import build_parser


def test_the_compare_flags_parse() -> None:
    args = build_parser().parse_args(
        ["compare", "--xstest", "shipped", "--n-xstest", "4", "--match-measure", "p90",
         "--kl-threshold", "0.02", "--gate-neighbours", "0"]
    )  # fmt: skip
    assert (args.xstest, args.n_xstest, args.match_measure) == ("shipped", 4, "p90")
    assert (args.kl_threshold, args.gate_neighbours) == (0.02, 0)
    defaults = build_parser().parse_args(["compare"])
    assert (defaults.xstest, defaults.match_measure, defaults.gate_neighbours) == (
        None,
        "mean",
        None,
    )
    sweep = build_parser().parse_args(["sweep", "--match-measure", "share_above"])
    assert sweep.match_measure == "share_above"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compare", "--match-measure", "max"])
