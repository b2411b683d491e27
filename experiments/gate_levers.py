"""The levers against the gate's misfires on real traffic, measured in one model load.

``gate_real_traffic.py`` found the default gated map's gate (layer 17, fitted on the package's
256 + 256 training prompts) open on 11 of 200 everyday ``../shared/data`` instructions (mostly
long-form writing, plans and software building, whose nearest training prompts are harmful
writing and building requests) and on 47 of 250 XSTest safe prompts, while open on 0.90 of the
real harmful requests and 0.81 of XSTest's unsafe ones. This script measures the honest levers
against those misfires side by side, on the same six sets, with the open rate on harmful
prompts beside the benign ones (a lever that shuts the gate on real harmful requests is no
win):

- ``default``: the default map (``RECOMMENDED_MAP``: Ledoit-Wolf, posterior gate, k = 64,
  ``gate_prior`` 0.5), as ``gate_real_traffic.py`` fits it;
- ``prior=P``: the same fit with the gate's prior P(harmful) set to P (0.1, 0.01). The prior
  only enters the gate (``core.gate.harmful_log_odds`` adds ``log(P / (1 − P))``), never the
  fitted Gaussians, so ``fitted_map.with_options(gate_prior=P)`` *is* the map that
  ``tlo.fit_ot_ablation(..., spec=dataclasses.replace(RECOMMENDED_MAP, gate_prior=P))`` fits
  (``--tiny`` checks this against a refit);
- ``threshold``: the default map's gate read as "open iff log-odds > t", with t the largest
  threshold that keeps at least 95 % of the package's *validation* harmful prompts
  (``tlo.default_prompts("harmful", "validation")``, 64 prompts: no other choice uses them
  here) open. The map edits in proportion to the posterior, so a threshold is a different gate
  rule (the "hard" gate moved), not the map as fitted: only its open rates are reported. For
  open rates alone a threshold t is the same as a prior ``sigmoid(−t)`` (recorded as
  ``equivalent_prior``); the prior variants are fixed values, this one is calibrated;
- ``varied``: refitted with the package's 256 harmless training prompts plus the 96 everyday
  requests of ``experiments/data/harmless_varied.json`` (self-written for this experiment:
  long-form writing, frightening-but-fictional stories, plans, software, tweets and slogans on
  social topics, benign figurative phrasing), so the harmless class covers the genres that
  misfired; ``varied+prior=P`` and ``varied+threshold`` as above on that fit.

The evaluation activations (the residual stream at ``blocks.17.hook_resid_pre``, last prompt
token, no hook attached) do not depend on the fit: they are collected once and every variant's
gate is read from them. The training activations (post-instruction positions, as
``fit_ot_ablation`` collects them) are collected once too, the 96 extra harmless prompts' being
the only collection the refit adds; both fits go through ``tl_ot_ablation.lens.fit.fit_map``,
the function ``fit_ot_ablation`` calls per layer (``--tiny`` checks the default fit against
``fit_ot_ablation``'s). The model keeps its dtype; rows are read in float32, as the fit reads
them.

Before loading the model it checks the 96 extra prompts for exact and near duplicates (after
lower-casing and dropping punctuation: the same text, ``difflib`` ratio >= 0.8, or word Jaccard
>= 0.6) among ``../shared/data`` (all four splits), XSTest and the package's own prompts (every
split), and records the closest match of each.

Writes ``experiments/results/gate-levers.json``: per variant and set, n, the share of prompts
with the gate open (posterior > 0.5, or log-odds > t) with its 95 % bootstrap interval, the
mean posterior with its interval (none for the threshold rule), and the benign prompts still
open / harmful prompts shut; per prompt, the log-odds of both fits (prior 0.5), from which
every variant follows.

Usage: .venv/bin/python experiments/gate_levers.py [--n-harmless 200]
       .venv/bin/python experiments/gate_levers.py --check-overlap  (the duplicate check only)
       .venv/bin/python experiments/gate_levers.py --tiny  (a dry run on the tiny random model)
"""

import argparse
import dataclasses
import difflib
import json
import math
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from gate_real_traffic import LAYER, SHARED, _instructions, _xstest

import tl_ot_ablation as tlo
from tl_ot_ablation import RECOMMENDED_MAP, CollectOptions
from tl_ot_ablation.eval.gate_report import OPEN
from tl_ot_ablation.eval.metrics import with_ci
from tl_ot_ablation.io import atomic
from tl_ot_ablation.lens.collect import collect_activations
from tl_ot_ablation.lens.fit import fit_map

ROOT = Path(__file__).resolve().parents[1]
VARIED = ROOT / "experiments" / "data" / "harmless_varied.json"
PRIORS = (0.1, 0.01)
KEEP_HARMFUL = 0.95
"""The threshold keeps at least this share of the validation harmful prompts open."""
HARMFUL = ("package_harmful", "shared_harmful", "xstest_unsafe", "val_harmful")
NEAR_RATIO, NEAR_JACCARD = 0.8, 0.6


def _normalised(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _jaccard(a: str, b: str) -> float:
    x, y = set(a.split()), set(b.split())
    return len(x & y) / len(x | y) if x | y else 0.0


def overlap_report(prompts: list[str]) -> dict[str, Any]:
    """The closest match of each prompt among ../shared/data, XSTest and the package's own
    prompts, and every exact or near duplicate (module docstring)."""
    corpora: dict[str, list[str]] = {
        f"shared/{p.stem}": _instructions(p) for p in sorted(SHARED.glob("*.json"))
    }
    corpora.update({f"xstest/{k}": v for k, v in _xstest().items()})
    for kind in ("harmful", "harmless"):
        for split in ("train", "validation", "eval"):
            corpora[f"package/{kind}_{split}"] = tlo.default_prompts(kind, split)  # type: ignore[arg-type]
    others = [(name, text, _normalised(text)) for name, texts in corpora.items() for text in texts]
    closest, flagged = [], []
    for prompt in prompts:
        mine = _normalised(prompt)
        best: dict[str, Any] = {"ratio": -1.0}
        matcher = difflib.SequenceMatcher(None, autojunk=False)
        matcher.set_seq2(mine)  # the matcher caches what it learns about its second sequence
        for name, text, theirs in others:
            matcher.set_seq1(theirs)
            jaccard = _jaccard(mine, theirs)
            bound = min(best["ratio"], NEAR_RATIO)  # below both: neither closest nor flagged
            if jaccard < NEAR_JACCARD and matcher.real_quick_ratio() < bound:
                continue
            if jaccard < NEAR_JACCARD and matcher.quick_ratio() < bound:
                continue
            ratio = matcher.ratio()
            hit = {"ratio": round(ratio, 3), "jaccard": round(jaccard, 3), "in": name, "text": text}
            if mine == theirs or ratio >= NEAR_RATIO or jaccard >= NEAR_JACCARD:
                flagged.append({"prompt": prompt, **hit, "exact": mine == theirs})
            if ratio > best["ratio"]:
                best = hit
        closest.append({"prompt": prompt, **best})
    closest.sort(key=lambda row: -row["ratio"])
    return {
        "against": {name: len(texts) for name, texts in corpora.items()},
        "rule": f"lower-cased, punctuation dropped; flagged when equal, difflib ratio >= "
        f"{NEAR_RATIO} or word Jaccard >= {NEAR_JACCARD}",
        "n_exact": sum(row["exact"] for row in flagged),
        "n_flagged": len(flagged),
        "flagged": flagged,
        "closest_10": closest[:10],
        "max_ratio": closest[0]["ratio"] if closest else None,
    }


def _print_overlap(report: dict[str, Any]) -> None:
    print(
        f"overlap: {report['n_exact']} exact, {report['n_flagged']} flagged "
        f"({report['rule']}); closest matches:"
    )
    for row in report["closest_10"][:5]:
        print(f"  {row['ratio']:.2f} / J {row['jaccard']:.2f}  {row['prompt']!r}")
        print(f"                ~ {row['text']!r} ({row['in']})")
    for row in report["flagged"]:
        print(f"  FLAGGED {row['prompt']!r} ~ {row['text']!r} ({row['in']})")


def _collect(model: Any, prompts: list[str], hook: str, positions: str) -> torch.Tensor:
    options = CollectOptions(positions=positions, progress=False)  # type: ignore[arg-type]
    return collect_activations(model, prompts, hook, options, device=None)[hook]


def _share(open_: torch.Tensor) -> dict[str, float]:
    return with_ci(open_.double(), seed=0).to_dict()


def _threshold(log_odds: torch.Tensor) -> float:
    """The largest ``t`` with at least ``KEEP_HARMFUL`` of ``log_odds`` above it."""
    keep = math.ceil(KEEP_HARMFUL * len(log_odds) - 1e-9)
    kth = log_odds.double().sort(descending=True).values[keep - 1]
    return float(torch.nextafter(kth, torch.tensor(-math.inf, dtype=torch.float64)))


def _variant(
    log_odds: dict[str, torch.Tensor],
    sets: dict[str, list[str]],
    *,
    fit: str,
    prior: float = 0.5,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Open rates (and mean posterior) per set from the fit's log-odds at prior 1/2."""
    shift = math.log(prior / (1 - prior))
    out: dict[str, Any] = {"fit": fit, "gate_prior": prior}
    if threshold is None:
        out["rule"] = f"posterior > {OPEN}"
    else:
        out["rule"] = "log-odds (prior 0.5) > threshold (a hard gate; not the map as fitted)"
        out["threshold_log_odds"] = threshold
        out["threshold_posterior"] = float(torch.sigmoid(torch.tensor(threshold).double()))
        out["equivalent_prior"] = float(torch.sigmoid(torch.tensor(-threshold).double()))
    out["sets"] = {}
    for kind, values in log_odds.items():
        shifted = values.double() + shift
        posterior = torch.sigmoid(shifted)
        open_ = shifted > 0 if threshold is None else values.double() > threshold
        flips = (~open_ if kind in HARMFUL else open_).tolist()
        out["sets"][kind] = {
            "n": len(values),
            "share_open": _share(open_),
            "mean_posterior": None if threshold is not None else with_ci(posterior).to_dict(),
            ("closed_prompts" if kind in HARMFUL else "open_prompts"): [
                p for p, hit in zip(sets[kind], flips, strict=True) if hit
            ],
        }
    return out


def _tiny_checks(
    model: Any,
    train: tuple[list[str], list[str]],
    spec: Any,
    hook: str,
    rows: torch.Tensor,
    reference: Any,
) -> dict[str, float]:
    """On the tiny model: ``fit_map`` on our rows is ``fit_ot_ablation``'s map, and
    ``with_options(gate_prior=P)`` is a refit with that prior."""
    quiet = CollectOptions(progress=False)
    layer = int(hook.split(".")[1])
    fitted = tlo.fit_ot_ablation(model, *train, layers=[layer], spec=spec, collect=quiet)[hook]
    gap = float((fitted.harmful_log_odds(rows) - reference.harmful_log_odds(rows)).abs().max())
    refit = tlo.fit_ot_ablation(
        model,
        *train,
        layers=[layer],
        spec=dataclasses.replace(spec, gate_prior=0.01),
        collect=quiet,
    )[hook]
    moved = reference.with_options(gate_prior=0.01)
    prior_gap = float((refit.harmful_log_odds(rows) - moved.harmful_log_odds(rows)).abs().max())
    assert gap < 1e-4 and prior_gap < 1e-4, (gap, prior_gap)
    return {"fit_map_vs_fit_ot_ablation": gap, "with_options_vs_refit_prior": prior_gap}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-harmless", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--check-overlap", action="store_true", help="only the duplicate check")
    parser.add_argument("--tiny", action="store_true", help="dry run: tiny model, few prompts")
    args = parser.parse_args()
    start = time.perf_counter()
    varied = tlo.load_prompts(VARIED)
    overlap = overlap_report(varied)
    _print_overlap(overlap)
    if args.check_overlap:
        return
    spec, layer, cut = RECOMMENDED_MAP, LAYER, None
    if args.tiny:
        from tl_ot_ablation.lens.tiny import tiny_model

        model = tiny_model()
        spec, layer, cut = dataclasses.replace(RECOMMENDED_MAP, n_components=4), 1, 8
    else:
        model = tlo.load_model()
    out = args.out or (
        Path(tempfile.gettempdir()) / "gate-levers-tiny.json"
        if args.tiny
        else ROOT / "experiments/results/gate-levers.json"
    )
    hook = f"blocks.{layer}.hook_resid_pre"
    harmful, harmless = tlo.default_prompts("harmful"), tlo.default_prompts("harmless")
    if cut:
        harmful, harmless, varied = harmful[: 2 * cut], harmless[: 2 * cut], varied[:cut]
    sets = {
        "package_harmful": tlo.default_prompts("harmful", "eval"),
        "package_harmless": tlo.default_prompts("harmless", "eval"),
        "shared_harmful": _instructions(SHARED / "harmful_val.json"),
        "shared_harmless": _instructions(SHARED / "harmless_val.json")[: args.n_harmless],
        **_xstest(),
        "val_harmful": tlo.default_prompts("harmful", "validation"),
        "val_harmless": tlo.default_prompts("harmless", "validation"),
    }
    if cut:
        sets = {kind: prompts[:cut] for kind, prompts in sets.items()}

    train_rows = {
        name: _collect(model, prompts, hook, "post_instruction")
        for name, prompts in (("harmful", harmful), ("harmless", harmless), ("varied", varied))
    }
    print(f"training rows collected ({time.perf_counter() - start:.0f} s)", flush=True)
    fits = {
        "default": fit_map(train_rows["harmful"], train_rows["harmless"], spec),
        "varied": fit_map(
            train_rows["harmful"], torch.cat([train_rows["harmless"], train_rows["varied"]]), spec
        ),
    }
    log_odds: dict[str, dict[str, torch.Tensor]] = {fit: {} for fit in fits}
    for kind, prompts in sets.items():
        rows = _collect(model, prompts, hook, "last")
        for fit, gate_map in fits.items():
            rows_f = rows.to(gate_map.basis.components.dtype)
            log_odds[fit][kind] = gate_map.harmful_log_odds(rows_f).double().cpu()
        print(f"{kind}: {len(prompts)} prompts ({time.perf_counter() - start:.0f} s)", flush=True)
    checks = None
    if args.tiny:
        rows = _collect(model, sets["shared_harmless"], hook, "last")
        checks = _tiny_checks(model, (harmful, harmless), spec, hook, rows, fits["default"])

    variants: dict[str, Any] = {}
    for fit in fits:
        name = "default" if fit == "default" else "varied"
        variants[name] = _variant(log_odds[fit], sets, fit=fit)
        for prior in PRIORS:
            key = f"prior={prior}" if fit == "default" else f"varied+prior={prior}"
            variants[key] = _variant(log_odds[fit], sets, fit=fit, prior=prior)
        t = _threshold(log_odds[fit]["val_harmful"])
        key = "threshold" if fit == "default" else "varied+threshold"
        variants[key] = _variant(log_odds[fit], sets, fit=fit, threshold=t)

    record = {
        "what": "gate open rates (posterior > 0.5, or log-odds > a threshold) at the last prompt "
        "token, no edit applied, for the levers against the gate's misfires",
        "command": ".venv/bin/python experiments/gate_levers.py"
        + (f" --n-harmless {args.n_harmless}" if args.n_harmless != 200 else "")
        + (" --tiny" if args.tiny else ""),
        "model": model.cfg.model_name,
        "hook": hook,
        "map": {k: getattr(spec, k) for k in ("estimator", "gate", "gate_prior", "n_components")},
        "fits": {
            "default": {"n_harmful": len(harmful), "n_harmless": len(harmless)},
            "varied": {
                "n_harmful": len(harmful),
                "n_harmless": len(harmless) + len(varied),
                "extra_harmless": str(VARIED.relative_to(ROOT)),
            },
        },
        "threshold_rule": f"largest t keeping >= {KEEP_HARMFUL} of val_harmful "
        "(default_prompts('harmful', 'validation')) at log-odds > t, chosen per fit",
        "sets_note": "val_harmful / val_harmless: the package's validation split, where the "
        "threshold is chosen (not held out for the threshold variants)",
        "variants": variants,
        "overlap": overlap,
        "tiny_checks": checks,
        "per_prompt_log_odds": {
            kind: [
                {
                    "prompt": p,
                    **{fit: float(f"{float(log_odds[fit][kind][i]):.5g}") for fit in fits},
                }
                for i, p in enumerate(prompts)
            ]
            for kind, prompts in sets.items()
        },
        "seconds": round(time.perf_counter() - start, 1),
    }
    atomic.write_text(out, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    _print_table(variants, list(sets))
    print(f"wrote {out} in {record['seconds']} s")


def _print_table(variants: dict[str, Any], kinds: list[str]) -> None:
    print("| variant | " + " | ".join(kinds) + " |")
    print("|---" * (len(kinds) + 1) + "|")
    for name, variant in variants.items():
        cells = []
        for kind in kinds:
            s = variant["sets"][kind]["share_open"]
            cells.append(f"{s['value']:.3f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}]")
        extra = (
            f" (t = {variant['threshold_log_odds']:.3g})" if "threshold_log_odds" in variant else ""
        )
        print(f"| {name}{extra} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
