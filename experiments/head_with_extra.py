"""Issue 32, part 2: the classifier head refitted with the 445 extra read answers.

The shipped head (``eval.judge_head``) was trained on the ``train`` rows of ``data/judge``
alone. ``data/judge-extra`` (``extend_pool.py``) holds 445 more harmful answers of six later
runs, read blind under the same rubric. This refits the head on the ``train`` rows of both
(``judge_training.train_head``: the same grouped cross-validation and settings search) and
scores it beside the shipped one on the fresh runs' harmful answers of
``experiments/rubric_hidden.py`` (no label of them is in either folder), alone and as the
reader judge's first stage (the shipped probe still deciding compliance vs deflection). It
does not replace the shipped head. Writes ``experiments/results/head-with-extra.json``
(about 2.5 min on the 2-core CPU; the reader's states come from its cache).

    .venv/bin/python experiments/head_with_extra.py
"""

import time
from dataclasses import asdict
from typing import Any

from _results import write_results
from rubric_hidden import fresh_rows

from tl_ot_ablation.eval.judge import ClassifierJudge
from tl_ot_ablation.eval.judge_features import features
from tl_ot_ablation.eval.judge_reader import ReaderProbe, reader_labels, shipped_probe_path
from tl_ot_ablation.eval.judge_scores import agreement_by_method
from tl_ot_ablation.eval.judge_training import REPO_LABELS, read_pool, settings_of, train_head
from tl_ot_ablation.eval.reader_training import (
    LAYERS,
    REPO_EXTRA,
    STATES_NAME,
    StateCache,
)
from tl_ot_ablation.io.result_cache import cache_home
from tl_ot_ablation.lens.model_cache import DEFAULT_MODEL

SHOW = ("direction_ablation", "ot_selective", "edited, pooled")


def main() -> None:
    started = time.monotonic()
    sets = read_pool([REPO_LABELS, REPO_EXTRA])
    head, search = train_head(sets, progress=False)
    fresh = [r for r in fresh_rows() if r["kind"] == "harmful"]
    prompts, answers = [r["prompt"] for r in fresh], [r["completion"] for r in fresh]
    shipped = ClassifierJudge().judge(prompts, answers)
    refitted = head.predict(features(prompts, answers, groups=head.groups))
    probe = ReaderProbe.read(shipped_probe_path())
    states = StateCache(cache_home() / STATES_NAME, DEFAULT_MODEL).states_of(fresh, None)
    p_compliance = probe.p_compliance(states[:, LAYERS.index(probe.layer)])
    judges = {
        "shipped head": shipped,
        "head refitted with data/judge-extra": refitted,
        "reader, shipped head": reader_labels(shipped, p_compliance),
        "reader, refitted head": reader_labels(refitted, p_compliance),
    }
    found: dict[str, Any] = {
        name: {m: v for m, v in agreement_by_method(fresh, labels).items() if m in SHOW}
        for name, labels in judges.items()
    }
    write_results(
        "head-with-extra.json",
        {
            "what": __doc__.splitlines()[0],
            "command": "python experiments/head_with_extra.py",
            "labels": {name: len(rows) for name, rows in sets.items()},
            "refitted": {**asdict(settings_of(head)), "n_train": search["n_train"]},
            "fresh_harmful": len(fresh),
            "fresh": found,
            "seconds": round(time.monotonic() - started),
        },
    )
    for name, by_method in found.items():
        print(
            f"{name:36s}",
            "  ".join(
                f"{m[:10]} {v['value']:.2f} judged {v['judged_compliance_rate']:.2f} "
                f"read {v['read_compliance_rate']:.2f}"
                for m, v in by_method.items()
            ),
        )


if __name__ == "__main__":
    main()
