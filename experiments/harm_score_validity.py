"""Issue 32, part 3: does the embedded harm score (``eval.harm_score``) track the readings?

Scores every harmful answer of ``data/judge/labels-*.jsonl`` (prompt, completion, ``label`` =
the adjudicated reading under ``tl_ot_ablation/data/rubric.md``, ``label_before`` = the older label) and
reports, per group of rows:

- the mean score by adjudicated label;
- the mean score of *hollow* answers (``label_before`` compliance, read as not compliance) and
  of truly compliant ones (compliance both times);
- the AUROC of the score for adjudicated compliance vs not, over all harmful answers and among
  those that *look* compliant (``label_before`` compliance), and among those the shipped judge
  labels compliance (where the labels tie);
- the same AUROCs of ``specific`` and ``convincing`` alone, and of the shipped judge's own
  P(compliance), for reference.

``refused`` comes from the shipped classifier judge's label (what ``compare`` passes) and,
as a variant, from the refusal markers. The score's constants were set by inspection on the
``train`` rows, which the judge's head was also trained on: the ``held_out`` group is the one
to quote: the rows no head was trained on, as ``docs/judge.md`` counts them
(``judge_training.held_out_rows``: not ``train``, and no ``train`` row of any file has the
prompt); ``train`` and ``all`` are shown for completeness. Text only, no chat model (about two and a half minutes on 2 shared CPU
cores). Writes ``experiments/results/harm-score.json``.

    .venv/bin/python experiments/harm_score_validity.py
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
from _results import write_results
from scipy.stats import bootstrap
from sklearn.metrics import roc_auc_score

from tl_ot_ablation.eval.harm_score import harm_parts
from tl_ot_ablation.eval.judge_features import features
from tl_ot_ablation.eval.judge_head import LABELS, shipped_head

DATA = Path(__file__).resolve().parents[1] / "data" / "judge"
FILES = ("labels-1.5b.jsonl", "labels-0.5b.jsonl", "labels-shared.jsonl")
GROUPS = ("held_out", "train", "all")


def load_rows() -> list[dict[str, Any]]:
    """Every harmful row, with ``group``: ``train``, or ``held_out`` when neither it nor any
    ``train`` row (harmful or not, of any file) has its prompt, else ``None`` (in ``all`` only)."""
    rows = []
    for name in FILES:
        for line in (DATA / name).read_text().splitlines():
            if line.strip():
                rows.append({**json.loads(line), "file": name})
    trained = {r["prompt"] for r in rows if r["split"] == "train"}
    for row in rows:
        held = row["split"] != "train" and row["prompt"] not in trained
        row["group"] = "train" if row["split"] == "train" else "held_out" if held else None
    return [r for r in rows if r["kind"] == "harmful"]


def auroc(
    positive: np.ndarray, score: np.ndarray, keep: np.ndarray, *, ci: bool = False
) -> dict[str, Any]:
    """AUROC of ``score`` for ``positive`` among the rows ``keep`` (None: one class only), with
    its 95 % percentile bootstrap CI over rows when ``ci`` (1000 resamples, seed 0)."""
    y, s = positive[keep], score[keep]
    value = float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else None
    found: dict[str, Any] = {"auroc": value, "n": int(keep.sum()), "n_positive": int(y.sum())}
    if ci and value is not None:
        interval = bootstrap(
            (y, s),
            lambda a, b: roc_auc_score(a, b),
            paired=True,
            vectorized=False,
            n_resamples=1000,
            method="percentile",
            random_state=0,
        ).confidence_interval
        found["ci"] = [float(interval.low), float(interval.high)]
    return found


def summarise(
    rows: list[dict[str, Any]],
    scores: dict[str, np.ndarray],
    judged: list[str],
    keep: np.ndarray,
    *,
    ci: bool = False,
) -> dict[str, Any]:
    label = np.array([r["label"] for r in rows])
    before = np.array([r.get("label_before") for r in rows])
    compliant = label == "compliance"
    looks = before == "compliance"
    judged_compliant = np.array(judged) == "compliance"
    hollow = keep & looks & ~compliant
    real = keep & looks & compliant
    main = scores["score"]
    part: dict[str, Any] = {
        "n": int(keep.sum()),
        "mean_by_label": {
            name: {
                "mean": float(main[keep & (label == name)].mean()),
                "n": int((keep & (label == name)).sum()),
            }
            for name in LABELS
            if (keep & (label == name)).any()
        },
        "hollow": {"mean": float(main[hollow].mean()), "n": int(hollow.sum())},
        "truly_compliant": {"mean": float(main[real].mean()), "n": int(real.sum())},
    }
    subsets = {
        "all": keep,
        "looks_compliant": keep & looks,
        "judged_compliant": keep & judged_compliant,
    }
    part["auroc"] = {
        name: {subset: auroc(compliant, values, mask, ci=ci) for subset, mask in subsets.items()}
        for name, values in scores.items()
    }
    return part


def _ci(found: dict[str, Any]) -> str:
    return f" [{found['ci'][0]:.2f}, {found['ci'][1]:.2f}]" if "ci" in found else ""


def main() -> None:
    rows = load_rows()
    prompts = [r["prompt"] for r in rows]
    completions = [r["completion"] for r in rows]
    head = shipped_head()
    probabilities = head.probabilities(features(prompts, completions, groups=head.groups))
    judged = [LABELS[i] for i in probabilities.argmax(-1).tolist()]
    p_compliance = probabilities[:, LABELS.index("compliance")].numpy()
    parts = harm_parts(prompts, completions, labels=judged)
    by_markers = harm_parts(prompts, completions)
    scores = {
        "score": np.array([p.score for p in parts]),
        "score_marker_refusal": np.array([p.score for p in by_markers]),
        "specific": np.array([p.specific for p in parts]),
        "convincing": np.array([p.convincing for p in parts]),
        "judge_p_compliance": p_compliance,
    }
    group_of = np.array([str(r["group"]) for r in rows])
    record: dict[str, Any] = {
        "what": "eval.harm_score on every harmful answer of data/judge/labels-*.jsonl against "
        "the adjudicated readings (label); hollow = label_before compliance, read otherwise",
        "refused": "the shipped classifier judge's label (score_marker_refusal: the markers)",
        "tuning": "constants set by inspection on the train rows; quote held_out (AUROCs with "
        "95 % bootstrap CIs over rows there)",
        "files": list(FILES),
        "held_out_rows": "not train, and no train row of any file has the prompt "
        "(judge_training.held_out_rows)",
    }
    for group in GROUPS:
        keep = np.ones(len(rows), bool) if group == "all" else group_of == group
        record[group] = summarise(rows, scores, judged, keep, ci=group == "held_out")
    write_results("harm-score.json", record)
    for group in GROUPS:
        part = record[group]
        auc = part["auroc"]["score"]
        print(
            f"{group} (n={part['n']}): mean by label "
            + ", ".join(f"{k} {v['mean']:.3f}" for k, v in part["mean_by_label"].items())
            + f"; hollow {part['hollow']['mean']:.3f} (n={part['hollow']['n']}) vs truly "
            f"compliant {part['truly_compliant']['mean']:.3f} (n={part['truly_compliant']['n']})"
            f"; AUROC all {auc['all']['auroc']:.3f}{_ci(auc['all'])}, looks compliant "
            f"{auc['looks_compliant']['auroc']:.3f}{_ci(auc['looks_compliant'])}, judged "
            f"compliant {auc['judged_compliant']['auroc']:.3f}{_ci(auc['judged_compliant'])}"
        )
        for name in ("score_marker_refusal", "specific", "convincing", "judge_p_compliance"):
            other = part["auroc"][name]
            print(
                f"    {name}: AUROC all {other['all']['auroc']:.3f}{_ci(other['all'])}, looks "
                f"compliant {other['looks_compliant']['auroc']:.3f}"
                f"{_ci(other['looks_compliant'])}, judged compliant "
                f"{other['judged_compliant']['auroc']:.3f}{_ci(other['judged_compliant'])}"
            )


if __name__ == "__main__":
    main()
