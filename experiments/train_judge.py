"""Issue 12: train the compliance judge's head on the labelled set, and validate every judge.

Reads ``tests/data/judge_labels.jsonl`` (completions labelled by reading, with a ``split`` field:
whole prompts go to ``train`` or ``validation``, so no prompt is seen on both sides), fits a
multinomial logistic regression on the train part (its inverse regularisation ``C`` chosen by
cross-validation grouped by prompt, on the train part alone, as is whether classes are
reweighted), writes the head to
``tl_ot_ablation/data/judge_head.safetensors``, and scores the classifier and the marker judge on
the validation part: accuracy over the four labels, compliance-vs-not agreement, the confusion
matrix and per-class precision / recall. Writes ``experiments/results/judge.json``.

    .venv/bin/python experiments/train_judge.py
"""

import json
from pathlib import Path

import numpy as np
import torch
from _results import write_results
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
from sklearn.model_selection import GroupKFold, cross_val_score

from tl_ot_ablation.core import atomic
from tl_ot_ablation.eval.judge import HEAD_FILE, LABELS, JudgeHead, features, marker_labels

ROOT = Path(__file__).resolve().parents[1]
LABELLED = ROOT / "tests" / "data" / "judge_labels.jsonl"
HEAD = ROOT / "tl_ot_ablation" / "data" / HEAD_FILE
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
WEIGHTS = ("balanced", None)


def scores(truth: list[str], predicted: list[str]) -> dict[str, object]:
    """Four-label accuracy, compliance-vs-not agreement, confusion matrix, per-class P / R."""
    precision, recall, _, support = precision_recall_fscore_support(
        truth, predicted, labels=list(LABELS), zero_division=0
    )
    binary = [t == "compliance" for t in truth], [p == "compliance" for p in predicted]
    return {
        "n": len(truth),
        "accuracy": float(accuracy_score(truth, predicted)),
        "compliance_agreement": float(accuracy_score(*binary)),
        "labels": list(LABELS),
        "confusion": confusion_matrix(truth, predicted, labels=list(LABELS)).tolist(),
        "precision": dict(zip(LABELS, map(float, precision), strict=True)),
        "recall": dict(zip(LABELS, map(float, recall), strict=True)),
        "support": dict(zip(LABELS, map(int, support), strict=True)),
    }


def main() -> None:
    rows = [json.loads(line) for line in LABELLED.read_text().splitlines() if line.strip()]
    train = [r for r in rows if r["split"] == "train"]
    held = [r for r in rows if r["split"] == "validation"]
    x_train = features([r["prompt"] for r in train], [r["completion"] for r in train]).double()
    y_train = np.array([LABELS.index(r["label"]) for r in train])
    groups = [r["prompt"] for r in train]
    mean, scale = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    z_train = ((x_train - mean) / scale).numpy()
    cv = GroupKFold(n_splits=5)
    by_c = {
        f"C={c} weights={weights}": float(
            cross_val_score(
                LogisticRegression(C=c, class_weight=weights, max_iter=5000),
                z_train,
                y_train,
                groups=groups,
                cv=cv,
            ).mean()
        )
        for c in C_GRID
        for weights in WEIGHTS
    }
    best = max(by_c, key=lambda key: by_c[key])
    best_c, best_weights = next(
        (c, w) for c in C_GRID for w in WEIGHTS if f"C={c} weights={w}" == best
    )
    fitted = LogisticRegression(C=best_c, class_weight=best_weights, max_iter=5000)
    fitted.fit(z_train, y_train)
    info = {
        "labels": list(LABELS),
        "C": best_c,
        "class_weight": best_weights,
        "n_train": len(train),
        "cv_accuracy": by_c,
    }
    head = JudgeHead(
        torch.from_numpy(fitted.coef_).double(),
        torch.from_numpy(fitted.intercept_).double(),
        mean,
        scale,
        info,
    )
    atomic.write_bytes(HEAD, head.to_bytes())
    x_held = features([r["prompt"] for r in held], [r["completion"] for r in held])
    predicted = [LABELS[i] for i in head.probabilities(x_held).argmax(-1).tolist()]
    truth = [r["label"] for r in held]
    record = {
        "labelled": str(LABELLED.relative_to(ROOT)),
        "n_train": len(train),
        "n_validation": len(held),
        "label_counts": {
            s: {k: sum(r["label"] == k for r in part) for k in LABELS}
            for s, part in (("train", train), ("validation", held))
        },
        "classifier": {"chosen": best, "cv_accuracy": by_c, **scores(truth, predicted)},
        "markers": scores(truth, marker_labels([r["completion"] for r in held])),
    }
    write_results("judge.json", record)
    for name in ("classifier", "markers"):
        part = record[name]
        print(
            f"{name}: accuracy {part['accuracy']:.3f}, compliance agreement "
            f"{part['compliance_agreement']:.3f}"
        )


if __name__ == "__main__":
    main()
