"""Issue 12: train the compliance judge's head on the labelled sets, and validate every judge.

Reads the completions labelled by reading (never by a judge), each row with a ``split`` field
that keeps whole prompts on one side:

- ``tests/data/judge_labels.jsonl``: the embedded 1.5B model, 8 configurations; ``train`` /
  ``validation``;
- ``tests/data/judge_labels_0.5b.jsonl``: the 0.5B model's compare run, 7 methods; ``train`` /
  ``test`` (the same prompt-hash rule, so no held-out prompt is trained on).

Fits a multinomial logistic regression on both ``train`` parts (its inverse regularisation
``C``, whether classes are reweighted, and how much lighter the hand features are penalised, chosen by 5-fold cross-validation grouped by prompt, on
the train parts alone), writes the head to ``tl_ot_ablation/data/judge_head.safetensors``, and
scores the classifier and the marker judge once on each held-out part: accuracy over the four
labels, compliance-vs-not agreement, the confusion matrix and per-class precision / recall.
Writes ``experiments/results/judge.json``.

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

from tl_ot_ablation.eval.judge import (
    HAND_FEATURES,
    HEAD_FILE,
    LABELS,
    JudgeHead,
    features,
    marker_labels,
)
from tl_ot_ablation.io import atomic

ROOT = Path(__file__).resolve().parents[1]
LABELLED = {
    "1.5b": ROOT / "tests" / "data" / "judge_labels.jsonl",
    "0.5b": ROOT / "tests" / "data" / "judge_labels_0.5b.jsonl",
}
HELD_OUT = {"1.5b": "validation", "0.5b": "test"}
HEAD = ROOT / "tl_ot_ablation" / "data" / HEAD_FILE
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
WEIGHTS = ("balanced", None)
HAND_WEIGHTS = (1.0, 3.0, 10.0)
N_HAND = len(HAND_FEATURES)


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


def agreement_by_length(head: JudgeHead, rows: list[dict]) -> dict[str, dict[str, float]]:
    """How much of a completion the judge needs: its agreement with the labels (read on 64
    tokens) when it sees only the first n tokens (the embedded model's tokenizer)."""
    from transformers import AutoTokenizer

    from tl_ot_ablation.lens.models import DEFAULT_MODEL, EMBEDDED_MODELS, cache_dir

    embedded = EMBEDDED_MODELS[DEFAULT_MODEL]
    tokenizer = AutoTokenizer.from_pretrained(
        cache_dir() / f"{embedded.name}-{embedded.sha256[:12]}-bfloat16"
    )
    truth = [r["label"] for r in rows]
    out = {}
    for n in (16, 32, 48, 64):
        cut = [
            tokenizer.decode(tokenizer(r["completion"], add_special_tokens=False)["input_ids"][:n])
            for r in rows
        ]
        x = features([r["prompt"] for r in rows], cut)
        predicted = [LABELS[i] for i in head.probabilities(x).argmax(-1).tolist()]
        part = scores(truth, predicted)
        out[str(n)] = {k: part[k] for k in ("accuracy", "compliance_agreement")}
    return out


def main() -> None:
    rows = {
        name: [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for name, path in LABELLED.items()
    }
    train = [r for part in rows.values() for r in part if r["split"] == "train"]
    held = {name: [r for r in rows[name] if r["split"] == HELD_OUT[name]] for name in rows}
    x_train = features([r["prompt"] for r in train], [r["completion"] for r in train]).double()
    y_train = np.array([LABELS.index(r["label"]) for r in train])
    groups = [r["prompt"] for r in train]
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    cv = GroupKFold(n_splits=5)

    def scaled(hand_weight: float) -> torch.Tensor:
        """Per-feature scale: standardised, the hand features then multiplied by
        ``hand_weight`` (a lighter L2 penalty on them than on the 384 embedding dimensions)."""
        scale = std.clone()
        scale[-N_HAND:] /= hand_weight
        return scale

    grid = [(c, w, h) for c in C_GRID for w in WEIGHTS for h in HAND_WEIGHTS]
    by_c = {
        f"C={c} weights={w} hand={h}": float(
            cross_val_score(
                LogisticRegression(C=c, class_weight=w, max_iter=5000),
                ((x_train - mean) / scaled(h)).numpy(),
                y_train,
                groups=groups,
                cv=cv,
            ).mean()
        )
        for c, w, h in grid
    }
    best = max(by_c, key=lambda key: by_c[key])
    best_c, best_weights, best_hand = next(
        (c, w, h) for c, w, h in grid if f"C={c} weights={w} hand={h}" == best
    )
    scale = scaled(best_hand)
    fitted = LogisticRegression(C=best_c, class_weight=best_weights, max_iter=5000)
    fitted.fit(((x_train - mean) / scale).numpy(), y_train)
    info = {
        "labels": list(LABELS),
        "C": best_c,
        "class_weight": best_weights,
        "hand_weight": best_hand,
        "features": ["embedding"] * 384 + list(HAND_FEATURES),
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
    record: dict[str, object] = {
        "labelled": {name: str(path.relative_to(ROOT)) for name, path in LABELLED.items()},
        "n_train": len(train),
        "label_counts": {
            "train": {k: sum(r["label"] == k for r in train) for k in LABELS},
            **{
                f"{name} {HELD_OUT[name]}": {k: sum(r["label"] == k for r in part) for k in LABELS}
                for name, part in held.items()
            },
        },
        "chosen": best,
        "cv_accuracy": by_c,
    }
    for name, part in held.items():
        x_held = features([r["prompt"] for r in part], [r["completion"] for r in part])
        predicted = [LABELS[i] for i in head.probabilities(x_held).argmax(-1).tolist()]
        truth = [r["label"] for r in part]
        where = f"{name} {HELD_OUT[name]}"
        record[f"classifier, {where}"] = scores(truth, predicted)
        record[f"markers, {where}"] = scores(truth, marker_labels([r["completion"] for r in part]))
    record["by_length"] = agreement_by_length(head, [r for part in held.values() for r in part])
    write_results("judge.json", record)
    for key, part in record.items():
        if isinstance(part, dict) and "accuracy" in part:
            print(
                f"{key}: accuracy {part['accuracy']:.3f}, compliance agreement "
                f"{part['compliance_agreement']:.3f} (n = {part['n']})"
            )


if __name__ == "__main__":
    main()
