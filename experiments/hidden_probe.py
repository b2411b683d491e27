"""Issue 12: would the evaluated model's own hidden states make a better judge than MiniLM?

A linear probe on the embedded 1.5B model's residual stream (its unhooked copy reading the
chat-formatted request and answer, no generation), against the shipped judge's inputs
(all-MiniLM-L6-v2 embedding plus hand features), both trained and scored the same way: a
multinomial logistic regression, its ``C`` chosen by an inner grouped 4-fold search, scored
by an outer grouped 5-fold cross-validation (whole prompts on one side), on the same rows.

Rows: the blind readings of edited models' harmful answers made after the judge was final
(``_readings.READINGS`` under the guide's rule or the strict one, not the stricter
``compare-ot-full``), where the readers agree; a seeded sample of ``--n`` of them, since the
1.5B model reads about one pair in 1.4 s on 2 CPU cores. Hidden features per layer: the mean
over the answer's tokens, the last token, and the last prompt token. About 6 min of hidden
states and 30 min of cross-validation here. Writes ``experiments/results/hidden-probe.json``.

    .venv/bin/python experiments/hidden_probe.py [--n 240]
"""

import argparse
import random
import time

import numpy as np
import torch
from _readings import load_readings
from _results import write_results
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_val_predict
from tqdm import tqdm

import tl_ot_ablation as tlo
from tl_ot_ablation.eval.judge import LABELS, features
from tl_ot_ablation.eval.judge_scores import scores
from tl_ot_ablation.lens.chat_template import format_chat
from tl_ot_ablation.lens.tokens import tokenize

PROBED = (
    "sweep-judged",
    "compare-others",
    "deflection-confirm-L17",
    "deflection-confirm",
    "compare-judged-layers",
)
"""The readings under the guide's rule and the strict one (not the stricter ``compare-ot-full``)."""
LAYERS = (6, 10, 12)
C_GRID = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)


def read_rows() -> list[dict]:
    """Every item of the ``PROBED`` readings whose readers agree, with that ``label``."""
    return [
        {**row, "label": row["labels"][0]}
        for run in PROBED
        for row in load_readings(run)
        if len(set(row["labels"])) == 1
    ]


def hidden_features(model, rows: list[dict], batch_size: int = 8) -> torch.Tensor:
    """Per row and layer in ``LAYERS``: the residual stream (``hook_resid_pre``) averaged over
    the answer's tokens, at the last token, and at the last prompt token; concatenated."""
    heads = format_chat(model.tokenizer, [r["prompt"] for r in rows])
    n_head = [len(model.tokenizer(h, add_special_tokens=False)["input_ids"]) for h in heads]
    texts = [h + r["completion"] for h, r in zip(heads, rows, strict=True)]
    n_full = [len(model.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    order = sorted(range(len(rows)), key=lambda i: n_full[i])
    names = [f"blocks.{layer}.hook_resid_pre" for layer in LAYERS]
    out: list[torch.Tensor | None] = [None] * len(rows)
    for start in tqdm(range(0, len(order), batch_size), desc="hidden states"):
        chunk = order[start : start + batch_size]
        ids, mask = tokenize(model.tokenizer, [texts[i] for i in chunk])
        with torch.inference_mode():
            _, cache = model.run_with_cache(
                ids, attention_mask=mask, names_filter=names, stop_at_layer=max(LAYERS) + 1
            )
        for row, i in enumerate(chunk):
            answer = n_full[i] - n_head[i]  # left padded: the answer is the last tokens
            parts = []
            for name in names:
                resid = cache[name][row].double()
                mean = resid[-answer:].mean(0) if answer > 0 else resid[-1]
                parts += [mean, resid[-1], resid[-answer - 1]]
            out[i] = torch.cat(parts)
    return torch.stack(out)  # type: ignore[arg-type]


def nested_cv(x: np.ndarray, y: np.ndarray, groups: list[str]) -> dict[str, float]:
    """Outer grouped 5-fold predictions of a logistic regression whose C an inner grouped
    4-fold search picks; four-label accuracy and compliance-vs-not agreement."""
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    search = GridSearchCV(
        LogisticRegression(max_iter=5000), {"C": list(C_GRID)}, cv=GroupKFold(n_splits=4)
    )
    predicted = cross_val_predict(
        search, x, y, groups=groups, cv=GroupKFold(n_splits=5), params={"groups": groups}
    )
    part = scores([LABELS[i] for i in y], [LABELS[i] for i in predicted])
    return {key: part[key] for key in ("accuracy", "compliance_agreement")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=240, help="rows to read (seeded sample)")
    args = parser.parse_args()
    rows = read_rows()
    random.Random(0).shuffle(rows)
    rows = rows[: args.n]
    y = np.array([LABELS.index(r["label"]) for r in rows])
    groups = [r["prompt"] for r in rows]

    start = time.perf_counter()
    minilm = features([r["prompt"] for r in rows], [r["completion"] for r in rows]).double()
    minilm_seconds = time.perf_counter() - start
    model = tlo.load_model()
    start = time.perf_counter()
    hidden = hidden_features(model, rows)
    hidden_seconds = time.perf_counter() - start

    width = model.cfg.d_model
    blocks = {
        f"layer {layer}": hidden[:, 3 * width * i : 3 * width * (i + 1)]
        for i, layer in enumerate(LAYERS)
    }
    candidates = {
        "MiniLM + hand features (the shipped judge's inputs)": minilm,
        **{f"1.5B hidden, {name}": block for name, block in blocks.items()},
        "1.5B hidden, all three layers": hidden,
        "MiniLM + 1.5B hidden layer 12": torch.cat([minilm, blocks["layer 12"]], dim=1),
    }
    record: dict[str, object] = {
        "rows": len(rows),
        "prompts": len(set(groups)),
        "runs": sorted({r["run"] for r in rows}),
        "label_counts": {label: int((y == i).sum()) for i, label in enumerate(LABELS)},
        "seconds_per_pair": {
            "MiniLM features": minilm_seconds / len(rows),
            "1.5B hidden states (12 of 28 layers)": hidden_seconds / len(rows),
        },
    }
    for name, x in candidates.items():
        record[name] = nested_cv(x.numpy(), y, groups)
        print(f"{name}: {record[name]}")
    write_results("hidden-probe.json", record)


if __name__ == "__main__":
    main()
