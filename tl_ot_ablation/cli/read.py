"""``tl-ot-ablation read export`` / ``read score``: blind reading of a compare report by people
(``eval.reading``, ``eval.reading_score``).

No model loads: the subcommand only reads and writes report files, so it runs before, and
apart from, the model-loading path in ``entry``.
"""

import argparse


def run_read(args: argparse.Namespace) -> None:
    """``read export`` (shuffled blind parts and their key) or ``read score`` (rates,
    paired differences and agreement, added to the report)."""
    from ..eval.reading import export_reading
    from ..eval.reading_score import BEGIN, END, read_markdown, score_reading, write_read_section

    if args.read_command == "export":
        out = export_reading(
            args.report,
            args.out,
            parts=args.parts,
            seed=args.seed,
            methods=args.methods,
            harmless=args.include_harmless,
            kinds=args.kinds,
            changed=args.changed,
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
