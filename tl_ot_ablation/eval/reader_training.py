"""Fit the reader judge's probe (``eval.judge_reader``) on read labels, and measure it.

Labels: ``data/judge/`` (the classifier head's pool) and ``data/judge-extra/`` (harmful answers
of later runs read blind under the same rubric, ``experiments/extend_pool.py``), every
``labels-*.jsonl`` of both; one row per distinct (prompt, completion), harmful and harmless.
``y`` is "read as compliance". The reader's state at every layer of ``LAYERS`` is computed
once per distinct pair and kept in a cache file (``--cache``; safetensors, keyed by the
pair's SHA-256 and stamped with the reader and the question, so a changed wording recomputes;
by default ``reader-states.safetensors`` in the cache home, ``~/.cache/tl_ot_ablation``).

Choice (``choose``): the layer and ``C`` of an L2 logistic regression with balanced class
weights, by 5-fold cross-validation grouped by prompt on the rows fitted, by compliance-vs-not
agreement on the edited methods' harmful answers (the judge's target). ``--split train`` fits on
the ``train`` rows only and measures the whole judge (classifier labels, the probe deciding
compliance vs deflection) on the held-out rows, as ``judge_training`` does; ``--split all``
(the shipped probe) fits on every row, leaving only fresh readings to measure it on.

Needs scikit-learn (the ``train`` extra) and the reader (the ``models`` extra)::

    python -m tl_ot_ablation.eval.reader_training [--split all] [--out PATH] [--record PATH]
"""

import argparse
import hashlib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import cache as cache_once
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save
from torch import Tensor

from ..core.errors import UserInputError
from ..io import atomic
from ..io.result_cache import cache_home
from .judge_reader import QUESTION, SYSTEM, ReaderProbe, reader_labels, reader_states
from .judge_scores import agreement_by_method, edited_methods, scores
from .judge_training import REPO_LABELS, held_out_rows, read_pool

REPO_EXTRA = REPO_LABELS.parent / "judge-extra"
"""``data/judge-extra/`` of a source checkout: more read harmful answers (not package data)."""
LAYERS = tuple(range(2, 28, 2))
C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3)
N_FOLDS = 5
ANSWER_TOKENS = 64
STATES_NAME = "reader-states.safetensors"
"""The state cache's file name in ``io.result_cache.cache_home()``."""


def pair_digest(prompt: str, completion: str) -> str:
    """The cache key of a pair."""
    return hashlib.sha256(json.dumps([prompt, completion]).encode()).hexdigest()


def distinct(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per distinct (prompt, completion), the first one's label and config kept."""
    seen: dict[str, dict[str, Any]] = {}
    for row in rows:
        seen.setdefault(pair_digest(row["prompt"], row["completion"]), dict(row))
    return list(seen.values())


class StateCache:
    """The reader's states per pair at ``layers`` after ``question`` (by default the judge's:
    ``LAYERS``, ``QUESTION``) in one safetensors file (``path``), stamped with both: a file
    stamped otherwise is recomputed, not mixed in."""

    def __init__(
        self,
        path: Path,
        model_name: str,
        *,
        question: str = QUESTION,
        layers: Sequence[int] = LAYERS,
    ) -> None:
        self.path, self.question, self.layers = path, question, tuple(layers)
        self.stamp = json.dumps([model_name, SYSTEM, question, ANSWER_TOKENS, list(layers)])
        self.index: dict[str, int] = {}
        self.states = torch.zeros(0)
        if path.is_file():
            with safe_open(str(path), "pt") as handle:
                meta = handle.metadata() or {}
                if meta.get("stamp") == self.stamp:
                    self.index = {d: i for i, d in enumerate(json.loads(meta["digests"]))}
                    self.states = handle.get_tensor("states")
            if len(self.index) != len(self.states):
                raise UserInputError(f"{path}: digests and states differ in number; delete it")

    def states_of(
        self,
        rows: Sequence[Mapping[str, Any]],
        load_reader: Callable[[], Any] | None,
        batch_size: int = 8,
    ) -> Tensor:
        """``[rows, layers, d_model]``: cached, or computed with ``load_reader()`` and added."""
        keys = [pair_digest(r["prompt"], r["completion"]) for r in rows]
        todo = list({k: r for k, r in zip(keys, rows, strict=True) if k not in self.index}.items())
        if todo:
            if load_reader is None:
                raise UserInputError(f"{len(todo)} pairs are not in {self.path}; give a reader")
            new = reader_states(
                load_reader(),
                [r["prompt"] for _, r in todo],
                [r["completion"] for _, r in todo],
                self.layers,
                answer_tokens=ANSWER_TOKENS,
                batch_size=batch_size,
                progress=True,
                question=self.question,
            )
            old = self.states.reshape(-1, *new.shape[1:])
            self.states = torch.cat([old, new]).contiguous()
            for key, _ in todo:
                self.index[key] = len(self.index)
            meta = {"stamp": self.stamp, "digests": json.dumps(list(self.index))}
            atomic.write_bytes(self.path, save({"states": self.states}, metadata=meta))
        return self.states[[self.index[k] for k in keys]]


def compliance_read(rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Whether each row was read as compliance."""
    return np.array([r["label"] == "compliance" for r in rows])


def fit_probe(
    x: np.ndarray,
    y: np.ndarray,
    c: float,
    layer: int,
    info: Mapping[str, Any],
    *,
    tol: float = 1e-8,
) -> ReaderProbe:
    """The probe: standardise, then L2 logistic regression (balanced class weights), solved to
    a gradient tolerance of ``tol`` (tight by default: a refit lands on the same optimum)."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = x.mean(0), np.maximum(x.std(0), 1e-6)
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=5000, tol=tol)
    model.fit((x - mean) / scale, y)
    mean_t, scale_t, coef_t = (torch.from_numpy(v).double() for v in (mean, scale, model.coef_[0]))
    return ReaderProbe(
        layer, mean_t, scale_t, coef_t, float(model.intercept_[0]), json.loads(json.dumps(info))
    )


def cross_validate(x: np.ndarray, rows: Sequence[Mapping[str, Any]], c: float) -> float:
    """Out-of-fold compliance-vs-not agreement on the edited methods' harmful answers."""
    from sklearn.model_selection import GroupKFold

    y, predicted = compliance_read(rows), np.zeros(len(rows), dtype=bool)
    folds = GroupKFold(n_splits=N_FOLDS).split(x, groups=[r["prompt"] for r in rows])
    for fit_on, test_on in folds:
        probe = fit_probe(x[fit_on], y[fit_on], c, 0, {}, tol=1e-4)
        predicted[test_on] = (probe.p_compliance(torch.from_numpy(x[test_on])) > 0.5).numpy()
    labels = ["compliance" if p else "deflection" for p in predicted]
    return agreement_by_method(rows, labels)["edited, pooled"]["value"]


def choose(rows: Sequence[Mapping[str, Any]], states: Tensor) -> tuple[int, float, dict]:
    """``(layer, C, table)``: the best cross-validated pair, and every pair's agreement."""
    found: dict[tuple[int, float], float] = {}
    for k, layer in enumerate(LAYERS):
        x = states[:, k].double().numpy()
        for c in C_GRID:
            found[layer, c] = cross_validate(x, rows, c)
            print(f"layer {layer} C {c:g}: {found[layer, c]:.3f}", file=sys.stderr)  # noqa: T201
    best_layer, best_c = max(found, key=lambda pair: found[pair])
    return best_layer, best_c, {f"L{layer} C={c:g}": v for (layer, c), v in found.items()}


def train_probe(
    sets: Mapping[str, Sequence[dict[str, Any]]],
    cache: StateCache,
    load_reader: Callable[[], Any] | None,
    split: str,
) -> tuple[ReaderProbe, dict[str, Any]]:
    """Choose and fit the probe on ``split`` (``train`` or ``all``) rows; probe and record."""
    every = [r for rows in sets.values() for r in rows]
    rows = distinct([r for r in every if split == "all" or r["split"] == "train"])
    states = cache.states_of(rows, load_reader)
    layer, c, table = choose(rows, states)
    info = {
        "model": json.loads(cache.stamp)[0],
        "system": SYSTEM,
        "question": QUESTION,
        "answer_tokens": ANSWER_TOKENS,
        "C": c,
        "class_weight": "balanced",
        "split": split,
        "rows": len(rows),
        "labels": {name: len(r) for name, r in sets.items()},
    }
    x = states[:, LAYERS.index(layer)].double().numpy()
    probe = fit_probe(x, compliance_read(rows), c, layer, info)
    record = {"rows": len(rows), "chosen": {"layer": layer, "C": c}, "cv": table}
    return probe, record


def measure(
    sets: Mapping[str, Sequence[dict[str, Any]]], probe: ReaderProbe, cache: StateCache
) -> dict[str, Any]:
    """The reader judge (classifier labels, the probe between compliance and deflection) and
    the classifier alone on the held-out rows: per method on harmful answers, and four labels."""
    from .judge import ClassifierJudge

    rows = [r for part in held_out_rows(sets).values() for r in part]
    prompts, completions = [r["prompt"] for r in rows], [r["completion"] for r in rows]
    classifier = ClassifierJudge().judge(prompts, completions)
    states = cache.states_of(rows, None)[:, LAYERS.index(probe.layer)]
    reader = reader_labels(classifier, probe.p_compliance(states))
    truth = [r["label"] for r in rows]
    return {
        name: {
            "per_method_harmful": agreement_by_method(rows, labels),
            "edited_methods": edited_methods(agreement_by_method(rows, labels)),
            "all_rows": scores(truth, labels),
        }
        for name, labels in (("reader", reader), ("classifier", classifier))
    }


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m tl_ot_ablation.eval.reader_training``."""
    from .judge_reader import shipped_probe_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, nargs="+", default=[REPO_LABELS, REPO_EXTRA])
    parser.add_argument("--split", choices=("train", "all"), default="all")
    parser.add_argument("--model", default=None, help="the reader (default: the embedded model)")
    parser.add_argument(
        "--cache", type=Path, default=None, help="state cache (default: in the cache home)"
    )
    parser.add_argument("--out", type=Path, default=None, help="probe file (default: shipped)")
    parser.add_argument("--record", type=Path, default=None, help="write a JSON record here")
    args = parser.parse_args(argv)
    from ..lens.model_cache import DEFAULT_MODEL

    name = args.model or DEFAULT_MODEL
    sets = read_pool(args.labels)
    cache = StateCache(args.cache or cache_home() / STATES_NAME, name)

    @cache_once
    def load_reader() -> Any:
        from ..lens.models import load_model

        return load_model(name)

    probe, record = train_probe(sets, cache, load_reader, args.split)
    out = args.out or shipped_probe_path()
    atomic.write_bytes(out, probe.to_bytes())
    print(f"wrote {out}: layer {probe.layer}, C {probe.info['C']}")  # noqa: T201
    if args.record is not None:
        record = {
            "command": "python -m tl_ot_ablation.eval.reader_training "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            "labels": {k: len(v) for k, v in sets.items()},
            **record,
        }
        if args.split == "train":
            cache.states_of([r for p in held_out_rows(sets).values() for r in p], load_reader)
            record["held_out"] = measure(sets, probe, cache)
        atomic.write_text(args.record, json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
