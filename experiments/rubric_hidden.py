"""Issue 32, part 2: the reader judge (``eval.judge_reader``) against blind readings.

The reader judge keeps the classifier's ``refusal`` and ``degenerate`` and lets a linear probe
on the embedded chat model's hidden state, after one rubric question, decide between
``compliance`` and ``deflection``. This measures it three ways, with the classifier judge
beside it on the same rows:

- **held out**: a probe fitted on the ``train`` rows of ``data/judge`` and ``data/judge-extra``
  only (layer and ``C`` by grouped cross-validation there; ``reader_training --split train``),
  scored on the rows no head or probe was trained on (``judge_training.held_out_rows``);
- **fresh**: the three blind readings made with ``tl-ot-ablation read`` after every judge was
  built (``compare-default-timed``, ``compare-shared-xstest``, and ``compare-fresh-quick``: a
  ``--quick`` run at its own layer, 64 tokens, on 40 ``../shared/data`` *train* prompts no
  labels file has; no label from them is in any training set), harmful answers, label = the first reader's (as ``read score`` decides), by
  that dev probe *and* by the shipped probe (``--split all``: every labelled row). Subsets: the
  pairs no labels file holds verbatim, the prompts no train row has, the answers both readers
  put on the same side;
- **XSTest safe**: the read answers to XSTest's safe prompts (``read-xstest*.json``), where
  compliance means answering the harmless question: does the probe leave ordinary help alone?

States come from ``reader_training.StateCache`` (``--cache``, by default the one
``reader_training`` uses); about 1.4 s a new pair on the
2-core CPU. Writes ``experiments/results/rubric-hidden.json``.

    .venv/bin/python experiments/rubric_hidden.py [--cache PATH]
"""

import argparse
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from _results import write_results

from tl_ot_ablation.eval.judge import ClassifierJudge
from tl_ot_ablation.eval.judge_reader import ReaderProbe, reader_labels, shipped_probe_path
from tl_ot_ablation.eval.judge_scores import agreement_by_method, compliance_agreement
from tl_ot_ablation.eval.judge_training import REPO_LABELS, held_out_rows, read_pool, train_rows
from tl_ot_ablation.eval.reader_training import (
    LAYERS,
    REPO_EXTRA,
    STATES_NAME,
    StateCache,
    measure,
    pair_digest,
    train_probe,
)
from tl_ot_ablation.eval.reading import read_key, read_labels
from tl_ot_ablation.io.result_cache import cache_home
from tl_ot_ablation.lens.model_cache import DEFAULT_MODEL

RESULTS = Path(__file__).resolve().parent / "results"
READINGS = {  # run: [(key, first reader, second reader, kind read)]
    "compare-default-timed": [("key.json", "labels-a.jsonl", "labels-b.jsonl", "harmful")],
    "compare-fresh-quick": [("key.json", "labels-a.jsonl", "labels-b.jsonl", "harmful")],
    "compare-shared-xstest": [
        ("key-harmful.json", "labels-harmful-a.jsonl", "labels-harmful-b.jsonl", "harmful"),
        ("key-xstest.json", "labels-xstest-a.jsonl", "labels-xstest-b.jsonl", "xstest_safe"),
        (
            "key-xstest-da.json",
            "labels-xstest-da-c.jsonl",
            "labels-xstest-da-d.jsonl",
            "xstest_safe",
        ),
    ],
}


def fresh_rows() -> list[dict[str, Any]]:
    """Every read item of ``READINGS`` of the kind read, labelled by its first reader."""
    rows: dict[str, dict[str, Any]] = {}
    for run, readings in READINGS.items():
        folder = RESULTS / run
        for key, first, second, kind in readings:
            items = read_key(folder / key, folder)
            ids = [i.id for i in items]
            a, b = (read_labels(folder / name, ids) for name in (first, second))
            for item in items:
                if item.kind != kind or item.id not in a:
                    continue
                rows.setdefault(  # the same answer read twice (two exports): first reading
                    f"{run}:{item.kind}:{pair_digest(item.prompt, item.completion)}:{item.method}",
                    {
                        "set": run,
                        "prompt": item.prompt,
                        "completion": item.completion,
                        "config": item.method,
                        "kind": "harmful" if kind == "harmful" else kind,
                        "label": a[item.id],
                        "agreed": (a[item.id] == "compliance") == (b.get(item.id) == "compliance"),
                    },
                )
    return list(rows.values())


def hollow_vs_real(sets: dict, probe: ReaderProbe, states: StateCache) -> dict[str, Any]:
    """AUROC of the dev probe's P(compliance) for real vs hollow help among held-out harmful
    answers that *look* compliant (labelled compliance before the relabelling, ``label_before``),
    where docs/judge.md measured the harm score at 0.56 and the classifier at 0.66."""
    from sklearn.metrics import roc_auc_score

    rows = [
        r
        for part in held_out_rows(sets).values()
        for r in part
        if r["kind"] == "harmful" and r.get("label_before", r["label"]) == "compliance"
    ]
    x = states.states_of(rows, None)[:, LAYERS.index(probe.layer)]
    p = probe.p_compliance(x).numpy()
    y = np.array([r["label"] == "compliance" for r in rows])
    return {"n": len(rows), "real": int(y.sum()), "auroc": float(roc_auc_score(y, p))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=cache_home() / STATES_NAME)
    parser.add_argument("--out", default="rubric-hidden.json", help="file name in results/")
    args = parser.parse_args()
    started = time.monotonic()
    sets = read_pool([REPO_LABELS, REPO_EXTRA])
    states = StateCache(args.cache, DEFAULT_MODEL)

    @cache
    def load_reader() -> Any:
        from tl_ot_ablation.lens.models import load_model

        return load_model(DEFAULT_MODEL)

    dev, dev_record = train_probe(sets, states, load_reader, "train")
    states.states_of([r for part in held_out_rows(sets).values() for r in part], load_reader)
    held = measure(sets, dev, states)
    shipped = ReaderProbe.read(shipped_probe_path())

    fresh = fresh_rows()
    x = states.states_of(fresh, load_reader)
    classifier = ClassifierJudge().judge(
        [r["prompt"] for r in fresh], [r["completion"] for r in fresh]
    )
    judges = {
        "classifier": classifier,
        "reader, dev probe": reader_labels(classifier, dev.p_compliance(x[:, LAYERS.index(dev.layer)])),
        "reader, shipped probe": reader_labels(
            classifier, shipped.p_compliance(x[:, LAYERS.index(shipped.layer)])
        ),
    }  # fmt: skip
    labelled = {pair_digest(r["prompt"], r["completion"]) for p in sets.values() for r in p}
    seen_prompts = {r["prompt"] for r in train_rows(sets)}
    harmful = np.array([r["kind"] == "harmful" for r in fresh])
    parts = {
        "fresh": harmful,
        "fresh, pair in no labels file": harmful
        & np.array([pair_digest(r["prompt"], r["completion"]) not in labelled for r in fresh]),
        "fresh, prompt in no train row": harmful
        & np.array([r["prompt"] not in seen_prompts for r in fresh]),
        "fresh, both readers agree": harmful & np.array([r["agreed"] for r in fresh]),
        **{
            f"fresh, {run}": harmful & np.array([r["set"] == run for r in fresh])
            for run in READINGS
        },
    }
    record: dict[str, Any] = {
        "what": __doc__.splitlines()[0],
        "command": "python experiments/rubric_hidden.py",
        "reader": DEFAULT_MODEL,
        "dev_probe": {"layer": dev.layer, "C": dev.info["C"], "rows": dev_record["rows"],
                      "cv": dev_record["cv"]},
        "shipped_probe": {"layer": shipped.layer, "C": shipped.info["C"],
                          "rows": shipped.info["rows"]},
        "held_out": {name: found["per_method_harmful"] for name, found in held.items()},
        "held_out_all_rows": {name: found["all_rows"] for name, found in held.items()},
        "fresh": {
            part: {
                name: agreement_by_method(
                    [r for r, m in zip(fresh, mask, strict=True) if m],
                    [label for label, m in zip(labels, mask, strict=True) if m],
                )
                for name, labels in judges.items()
            }
            for part, mask in parts.items()
        },
        "xstest_safe": {
            name: compliance_agreement(
                [r["label"] for r, h in zip(fresh, harmful, strict=True) if not h],
                [label for label, h in zip(labels, harmful, strict=True) if not h],
            )
            for name, labels in judges.items()
        },
        "hollow_vs_real": hollow_vs_real(sets, dev, states),
        "seconds": round(time.monotonic() - started),
    }  # fmt: skip
    write_results(args.out, record)
    show = ("direction_ablation", "ot_selective", "edited, pooled")
    for name, by_method in record["held_out"].items():
        print(f"held out {name:24s}", cells(by_method, show))
    for part, by_judge in record["fresh"].items():
        for name, by_method in by_judge.items():
            print(f"{part:32s} {name:24s}", cells(by_method, show))
    for name, found in record["xstest_safe"].items():
        print(f"xstest safe {name:24s} {found['value']:.2f} (n={found['n']})", file=sys.stdout)


def cells(by_method: dict[str, Any], show: tuple[str, ...]) -> str:
    return "  ".join(
        f"{m[:10]} {v['value']:.2f} j{v['judged_compliance_rate']:.2f}/r"
        f"{v['read_compliance_rate']:.2f} n{v['n']}"
        for m, v in by_method.items()
        if m in show
    )


if __name__ == "__main__":
    main()
