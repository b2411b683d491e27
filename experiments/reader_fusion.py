"""Issue 32: would the reader's probe and the classifier head, combined, agree more with readers?

They err in opposite directions (``rubric_hidden.py``: the classifier calls real help
"deflection", the reader calls hollow help "compliance"), so a logistic regression over both
log-odds of compliance might beat either. Fitted on the edited methods' harmful ``train`` rows
of ``data/judge`` and ``data/judge-extra`` with both inputs *out of fold* (the probe: the dev
probe's layer and ``C`` refitted in 5 folds grouped by prompt; the head: its settings refitted
the same way, ``rubric_logits.judge_probabilities``), cut at 0.5; scored where
``rubric_hidden.py`` scores, with the dev probe and the shipped head. States from the
``reader_training`` cache (run ``rubric_hidden.py`` first). Writes
``experiments/results/reader-fusion.json``.

    .venv/bin/python experiments/reader_fusion.py
"""

import json
from typing import Any

import numpy as np
import torch
from _results import write_results
from rubric_hidden import RESULTS, cells, fresh_rows
from rubric_logits import judge_probabilities, log_odds
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

from tl_ot_ablation.eval.judge_head import LABELS
from tl_ot_ablation.eval.judge_reader import reader_labels
from tl_ot_ablation.eval.judge_scores import UNEDITED, agreement_by_method, method_of
from tl_ot_ablation.eval.judge_training import (
    REPO_LABELS,
    held_out_rows,
    read_labels,
    read_pool,
    train_rows,
)
from tl_ot_ablation.eval.reader_training import (
    LAYERS,
    N_FOLDS,
    REPO_EXTRA,
    STATES_NAME,
    StateCache,
    compliance_read,
    distinct,
    fit_probe,
    pair_digest,
)
from tl_ot_ablation.io.result_cache import cache_home
from tl_ot_ablation.lens.model_cache import DEFAULT_MODEL

COMPLIANCE = LABELS.index("compliance")


def main() -> None:
    sets = read_pool([REPO_LABELS, REPO_EXTRA])
    states = StateCache(cache_home() / STATES_NAME, DEFAULT_MODEL)
    dev = json.loads((RESULTS / "rubric-hidden.json").read_text())["dev_probe"]
    k = LAYERS.index(dev["layer"])
    every = [r for rows in sets.values() for r in rows]

    def keyed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**r, "key": pair_digest(r["prompt"], r["completion"])} for r in rows]

    train = keyed(distinct([r for r in every if r["split"] == "train"]))
    held = keyed([r for part in held_out_rows(sets).values() for r in part])
    fresh = keyed(fresh_rows())
    # the head's own training rows (data/judge only): out of fold there; the shipped head on
    # every other row, which it never saw (data/judge-extra, held-out, fresh)
    head_train = keyed(distinct([r for r in train_rows(read_labels(REPO_LABELS))]))

    # the probe: out of fold on train rows, the dev probe (fitted on all train rows) elsewhere
    x_train = states.states_of(train, None)[:, k].double().numpy()
    y_train = compliance_read(train)
    p_probe_train = np.zeros(len(train))
    folds = GroupKFold(n_splits=N_FOLDS).split(x_train, groups=[r["prompt"] for r in train])
    for fit_on, test_on in folds:
        probe = fit_probe(x_train[fit_on], y_train[fit_on], dev["C"], dev["layer"], {}, tol=1e-4)
        p_probe_train[test_on] = probe.p_compliance(torch.from_numpy(x_train[test_on])).numpy()
    probe = fit_probe(x_train, y_train, dev["C"], dev["layer"], {}, tol=1e-4)

    def p_probe(rows: list[dict[str, Any]]) -> np.ndarray:
        return probe.p_compliance(states.states_of(rows, None)[:, k]).numpy()

    # the head: out of fold on train rows, the shipped head elsewhere
    scored = [*train, *held, *fresh]
    shipped, fitting = judge_probabilities(scored, head_train, out_of_fold=True)
    n_train, n_held = len(train), len(held)
    head_oof = fitting[:n_train]
    head_held, head_fresh = shipped[n_train : n_train + n_held], shipped[n_train + n_held :]

    edited = np.array(
        [r["kind"] == "harmful" and method_of(r["config"]) != UNEDITED for r in train]
    )
    inputs = np.stack([log_odds(p_probe_train), log_odds(head_oof[:, COMPLIANCE])], 1)
    fusion = LogisticRegression().fit(inputs[edited], y_train[edited])

    def judged(rows: list[dict[str, Any]], head: np.ndarray) -> dict[str, list[str]]:
        classifier = [LABELS[i] for i in head.argmax(-1)]
        p = p_probe(rows)
        fused = fusion.predict_proba(np.stack([log_odds(p), log_odds(head[:, COMPLIANCE])], 1))
        return {
            "classifier": classifier,
            "reader (dev probe)": reader_labels(classifier, torch.from_numpy(p)),
            "reader + classifier": reader_labels(classifier, torch.from_numpy(fused[:, 1])),
        }

    record: dict[str, Any] = {
        "what": __doc__.splitlines()[0],
        "command": "python experiments/reader_fusion.py",
        "dev_probe": dev["layer"],
        "fusion": {
            "inputs": ["probe log-odds", "head log-odds of compliance"],
            "coef": fusion.coef_[0].tolist(),
            "intercept": float(fusion.intercept_[0]),
            "fitted_on": int(edited.sum()),
        },
    }
    for part, rows, head in (("held_out", held, head_held), ("fresh", fresh, head_fresh)):
        harmful = [i for i, r in enumerate(rows) if r["kind"] == "harmful"]
        record[part] = {
            name: agreement_by_method([rows[i] for i in harmful], [labels[i] for i in harmful])
            for name, labels in judged(rows, head).items()
        }
    write_results("reader-fusion.json", record)
    show = ("direction_ablation", "ot_selective", "edited, pooled")
    for part in ("held_out", "fresh"):
        for name, by_method in record[part].items():
            print(f"{part:9s} {name:22s}", cells(by_method, show))


if __name__ == "__main__":
    main()
