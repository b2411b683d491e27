"""Build the classifier judge's head from read labels, and measure it on the held-out answers.

The labels live in the repository's ``data/judge/`` (``labels-*.jsonl``, one JSON object a
line with ``prompt``, ``completion``, ``label``, ``config``, ``kind`` and ``split``; whole
prompts stay on one side of the split). Every harmful answer there was read under the package's
rubric (``tl_ot_ablation/data/rubric.md``) by two blind readers, a third settling
disagreements (they agreed on compliance-vs-not for 0.943 of 562 answers, kappa 0.88).

Training (``train_head``): the ``train`` rows of every file; the feature groups
(``judge_features.FEATURE_GROUPS``), ``C`` (inverse L2 strength), class reweighting and the
``hand_weight`` (how much lighter the scalar features are penalised than the embedding
dimensions) are chosen by 5-fold cross-validation grouped by prompt, on the train rows alone,
by compliance-vs-not agreement on the edited methods' harmful answers (four-label accuracy
breaks ties). The chosen setting is refitted on all train rows with a tight solver tolerance,
so that the head is the optimum, not wherever the solver stopped.

Measuring (``held_out_rows``, ``judge_scores.agreement_by_method``): the rows no head was
trained on: every non-``train`` row, less those whose prompt has a ``train`` row.

Needs scikit-learn (the ``train`` extra: ``pip install 'tl-ot-ablation[train]'``)::

    python -m tl_ot_ablation.eval.judge_training [--labels data/judge [MORE ...]] [--out PATH]
        [--record experiments/results/judge.json] [--compare OLD_HEAD]
"""

import argparse
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..core.errors import UserInputError
from ..io import atomic
from .judge_features import FEATURE_GROUPS, feature_names, features
from .judge_head import LABELS, JudgeHead, shipped_head_path
from .judge_scores import agreement_by_method, edited_methods, scores

REPO_LABELS = Path(__file__).resolve().parents[2] / "data" / "judge"
"""``data/judge/`` of a source checkout (the labels are not package data)."""
GROUP_CHOICES = (("embedding", "hand"), ("embedding", "hand", "specificity"),
                 ("embedding", "hand", "specificity", "body"))  # fmt: skip
C_GRID = (0.001, 0.003, 0.01)
WEIGHT_CHOICES = ("balanced", None)
HAND_WEIGHTS = (1.0, 3.0)
N_FOLDS = 5


def _sklearn() -> Any:
    """scikit-learn's pieces, or an error naming the extra that installs it."""
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GroupKFold
    except ImportError as error:
        raise ImportError(
            "training the judge needs scikit-learn: pip install 'tl-ot-ablation[train]'"
        ) from error
    return LogisticRegression, GroupKFold


@dataclass(frozen=True)
class HeadSettings:
    """One point of the search: what the head reads and how it is regularised.

    Attributes:
        groups: Feature groups (``judge_features.FEATURE_GROUPS``).
        C: Inverse L2 strength of scikit-learn's ``LogisticRegression``.
        class_weight: ``"balanced"`` or ``None``.
        hand_weight: The scalar features' scale is divided by this (a lighter penalty).
    """

    groups: tuple[str, ...] = ("embedding", "hand")
    C: float = 0.01
    class_weight: str | None = None
    hand_weight: float = 1.0


def read_labels(folder: str | Path = REPO_LABELS) -> dict[str, list[dict[str, Any]]]:
    """Every ``labels-NAME.jsonl`` in ``folder``, by NAME."""
    paths = sorted(Path(folder).glob("labels-*.jsonl"))
    if not paths:
        raise UserInputError(f"no labels-*.jsonl in {folder}; pass --labels DIR")
    sets = {}
    for path in paths:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        wrong = {r.get("label") for r in rows} - set(LABELS)
        if wrong:
            raise UserInputError(f"{path}: labels outside {LABELS}: {sorted(map(str, wrong))}")
        sets[path.stem.removeprefix("labels-")] = rows
    return sets


def read_pool(folders: Sequence[Path]) -> dict[str, list[dict[str, Any]]]:
    """Every ``labels-NAME.jsonl`` of ``folders``, by NAME (names must not repeat)."""
    sets: dict[str, list[dict[str, Any]]] = {}
    for folder in folders:
        for name, rows in read_labels(folder).items():
            if name in sets:
                raise UserInputError(f"labels-{name}.jsonl is in two of {list(map(str, folders))}")
            sets[name] = rows
    return sets


def train_rows(sets: Mapping[str, Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The ``train`` rows of every set, in file order."""
    return [r for rows in sets.values() for r in rows if r["split"] == "train"]


def held_out_rows(sets: Mapping[str, Sequence[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Per set, the rows no head is trained on: not ``train``, and no ``train`` row shares the
    prompt (a fresh set may repeat a prompt of another set's train part)."""
    seen = {r["prompt"] for r in train_rows(sets)}
    held = {
        name: [r for r in rows if r["split"] != "train" and r["prompt"] not in seen]
        for name, rows in sets.items()
    }
    return {name: rows for name, rows in held.items() if rows}


def digest(rows: Sequence[Mapping[str, Any]]) -> str:
    """SHA-256 of the (prompt, completion, label) triples, to name the data a head saw."""
    text = json.dumps([[r["prompt"], r["completion"], r["label"]] for r in rows])
    return hashlib.sha256(text.encode()).hexdigest()


def _standardise(x: np.ndarray, settings: HeadSettings) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of ``x``'s columns: the standard deviation, divided by ``hand_weight``
    on the scalar (non-embedding) columns."""
    mean = x.mean(0)
    scale = np.maximum(x.std(0, ddof=1), 1e-6)
    scalar = np.array(["embedding" not in n for n in feature_names(settings.groups)])
    scale[scalar] /= settings.hand_weight
    return mean, scale


def _fit(x: np.ndarray, y: np.ndarray, settings: HeadSettings, *, tol: float) -> Any:
    regression, _ = _sklearn()
    mean, scale = _standardise(x, settings)
    model = regression(C=settings.C, class_weight=settings.class_weight, tol=tol, max_iter=20_000)
    model.fit((x - mean) / scale, y)
    return model, mean, scale


def fit_head(
    x: Float[Tensor, "n features"],
    labels: Sequence[str],
    settings: HeadSettings,
    info: Mapping[str, Any] | None = None,
) -> JudgeHead:
    """The head fitted on ``x`` (``features(..., groups=settings.groups)``) and ``labels``.

    Every label of ``LABELS`` must occur. The solver runs to a gradient tolerance of 1e-10,
    so refitting on the same data lands on the same optimum up to floating-point noise.
    """
    y = np.array([LABELS.index(label) for label in labels])
    if set(y.tolist()) != set(range(len(LABELS))):
        raise UserInputError(f"every label of {LABELS} must occur in the training rows")
    if x.shape[-1] != len(feature_names(settings.groups)):
        raise UserInputError(f"x has {x.shape[-1]} columns, groups {settings.groups} need "
                             f"{len(feature_names(settings.groups))}")  # fmt: skip
    model, mean, scale = _fit(x.double().numpy(), y, settings, tol=1e-10)
    return JudgeHead(
        torch.from_numpy(model.coef_).double(),
        torch.from_numpy(model.intercept_).double(),
        torch.from_numpy(mean).double(),
        torch.from_numpy(scale).double(),
        # Through JSON, so that the info equals the one read back from the file.
        json.loads(json.dumps({"labels": list(LABELS), **asdict(settings), **(info or {})})),
    )


def cross_validate(
    x: np.ndarray, rows: Sequence[Mapping[str, Any]], settings: HeadSettings
) -> dict[str, float]:
    """Grouped (by prompt) ``N_FOLDS``-fold out-of-fold predictions of ``settings`` on
    ``rows``: compliance-vs-not agreement on the edited methods' harmful answers (pooled, and
    the lowest method's) and four-label accuracy."""
    _, group_folds = _sklearn()
    y = np.array([LABELS.index(r["label"]) for r in rows])
    predicted = np.zeros_like(y)
    prompts = [r["prompt"] for r in rows]
    for fit_on, test_on in group_folds(n_splits=N_FOLDS).split(x, y, prompts):
        model, mean, scale = _fit(x[fit_on], y[fit_on], settings, tol=1e-4)
        predicted[test_on] = model.predict((x[test_on] - mean) / scale)
    by_method = agreement_by_method(rows, [LABELS[i] for i in predicted])
    edited = edited_methods(by_method).values()
    return {
        "edited_harmful_agreement": by_method["edited, pooled"]["value"],
        "lowest_method_agreement": min(edited),
        "accuracy": float((predicted == y).mean()),
    }


def choose_settings(
    rows: Sequence[Mapping[str, Any]], x_all: Float[Tensor, "n features"], *, progress: bool = True
) -> tuple[HeadSettings, dict[str, dict[str, float]]]:
    """The setting with the best cross-validated edited-harmful agreement (then accuracy),
    and every setting's figures. ``x_all`` holds every group (``FEATURE_GROUPS`` order)."""
    table: dict[str, dict[str, float]] = {}
    best: tuple[tuple[float, float], HeadSettings] | None = None
    for groups in GROUP_CHOICES:
        x = select_columns(x_all, groups).double().numpy()
        for c in C_GRID:
            for weight in WEIGHT_CHOICES:
                for hand in HAND_WEIGHTS:
                    settings = HeadSettings(groups, c, weight, hand)
                    figures = cross_validate(x, rows, settings)
                    table[json.dumps(asdict(settings))] = figures
                    if progress:
                        print(f"{settings}: {figures}", file=sys.stderr, flush=True)  # noqa: T201
                    key = (figures["edited_harmful_agreement"], figures["accuracy"])
                    if best is None or key > best[0]:
                        best = (key, settings)
    assert best is not None
    return best[1], table


def _columns(groups: Sequence[str], within: Sequence[str]) -> list[int]:
    """Indices of ``groups``' columns among the features of ``within``."""
    out: list[int] = []
    start = 0
    for group, names in FEATURE_GROUPS.items():
        if group in within:
            if group in groups:
                out += range(start, start + len(names))
            start += len(names)
    return out


def select_columns(
    x: Float[Tensor, "n features"],
    groups: Sequence[str],
    within: Sequence[str] = tuple(FEATURE_GROUPS),
) -> Float[Tensor, "n selected"]:
    """The columns of ``groups`` from features computed for the groups ``within``."""
    missing = set(groups) - set(within)
    if missing:
        raise UserInputError(f"features for {list(within)} lack the groups {sorted(missing)}")
    return x[:, _columns(groups, within)]


def settings_of(head: JudgeHead) -> HeadSettings:
    """The ``HeadSettings`` a head was fitted with (from its ``info``)."""
    fields = HeadSettings.__dataclass_fields__
    values = {k: v for k, v in head.info.items() if k in fields}
    return HeadSettings(**{**values, "groups": head.groups})


def refit_head(
    sets: Mapping[str, Sequence[dict[str, Any]]],
    settings: HeadSettings,
    x_train: Float[Tensor, "n features"] | None = None,
) -> JudgeHead:
    """The head of ``settings`` fitted on the ``train`` rows of ``sets`` (no search):
    ``train_head``'s last step, what a rebuild of the shipped head runs. ``x_train``: the
    train rows' features for ``settings.groups``, if already computed."""
    rows = train_rows(sets)
    if x_train is None:
        x_train = features(
            [r["prompt"] for r in rows], [r["completion"] for r in rows], groups=settings.groups
        )
    info = {"n_train": len(rows), "train_digest": digest(rows)}
    return fit_head(x_train, [r["label"] for r in rows], settings, info)


def train_head(
    sets: Mapping[str, Sequence[dict[str, Any]]], *, progress: bool = True
) -> tuple[JudgeHead, dict[str, Any]]:
    """Choose the setting by grouped cross-validation on the train rows, refit it on all of
    them; the head and the search's record."""
    rows = train_rows(sets)
    x_all = features(
        [r["prompt"] for r in rows], [r["completion"] for r in rows],
        groups=tuple(FEATURE_GROUPS), progress=progress,
    )  # fmt: skip
    settings, table = choose_settings(rows, x_all, progress=progress)
    head = refit_head(sets, settings, select_columns(x_all, settings.groups))
    record = {
        "n_train": len(rows),
        "train_label_counts": {k: sum(r["label"] == k for r in rows) for k in LABELS},
        "chosen": asdict(settings),
        "chosen_by": "5-fold CV grouped by prompt on the train rows: compliance-vs-not "
        "agreement on edited methods' harmful answers, then four-label accuracy",
        "cv": table,
    }
    return head, record


def evaluate_heads(
    sets: Mapping[str, Sequence[dict[str, Any]]], heads: Mapping[str, JudgeHead]
) -> dict[str, Any]:
    """Each head on the held-out rows (``held_out_rows``): per held-out set and pooled over
    them, compliance-vs-not agreement per method on harmful answers (with bootstrap 95 %
    intervals) and the four-label scores on every row."""
    held = held_out_rows(sets)
    parts = {**held, "pooled": [r for rows in held.values() for r in rows]}
    pooled = parts["pooled"]
    groups = tuple(g for g in FEATURE_GROUPS if any(g in h.groups for h in heads.values()))
    x_all = features(
        [r["prompt"] for r in pooled], [r["completion"] for r in pooled], groups=groups
    )
    predicted = {
        name: head.predict(select_columns(x_all, head.groups, groups))
        for name, head in heads.items()
    }
    record: dict[str, Any] = {}
    start = 0
    for part, rows in parts.items():
        where = range(len(pooled)) if part == "pooled" else range(start, start + len(rows))
        start += 0 if part == "pooled" else len(rows)
        record[part] = {
            name: {
                "per_method_harmful": agreement_by_method(rows, [labels[i] for i in where]),
                "all_rows": scores([r["label"] for r in rows], [labels[i] for i in where]),
            }
            for name, labels in predicted.items()
        }
    return record


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m tl_ot_ablation.eval.judge_training``: train, write the head, and with
    ``--record`` measure it (and ``--compare`` heads) on the held-out rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--labels",
        type=Path,
        nargs="+",
        default=[REPO_LABELS],
        help="folders of labels-*.jsonl (e.g. data/judge data/judge-extra)",
    )
    parser.add_argument("--out", type=Path, default=None, help="head file (default: the package's)")
    parser.add_argument("--record", type=Path, default=None, help="write a JSON record here")
    parser.add_argument("--compare", type=Path, nargs="*", default=[], help="other heads to score")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    sets = read_pool(args.labels)
    head, record = train_head(sets, progress=not args.quiet)
    out = args.out or shipped_head_path()
    atomic.write_bytes(out, head.to_bytes())
    print(f"wrote {out}: {settings_of(head)}")  # noqa: T201
    if args.record is not None:
        heads = {"new": head, **{str(p): JudgeHead.read(p) for p in args.compare}}
        record = {
            "command": "python -m tl_ot_ablation.eval.judge_training "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            "labels": {name: len(rows) for name, rows in sets.items()},
            "held_out": {name: len(rows) for name, rows in held_out_rows(sets).items()},
            **record,
            "held_out_scores": evaluate_heads(sets, heads),
        }
        args.record.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(args.record, json.dumps(record, indent=1) + "\n")
        for name in heads:
            table = record["held_out_scores"]["pooled"][name]["per_method_harmful"]
            line = ", ".join(f"{m} {v['value']:.3f} (n={v['n']})" for m, v in table.items())
            print(f"{name}: {line}")  # noqa: T201


if __name__ == "__main__":
    main()
