"""The gated map's gate on real traffic: P(harmful | activation) per prompt, before any edit.

Fits the default map (``tlo.fit_ot_ablation``: Ledoit-Wolf, posterior gate, k = 64) at layer 17,
the layer ``compare`` judged best on the embedded model, on the package's 256 + 256 training
prompts. Then, with no hook attached, it reads the residual stream at that hook point at the last
prompt token (the position that yields the first generated token) and records the gate's
posterior there, for:

- the package's held-out prompts (32 harmful, 32 harmless: the reference);
- ``../shared/data``: the first ``--n-harmless`` harmless validation instructions (Alpaca-style)
  and the 39 harmful validation ones;
- XSTest (``../shared/data/xstest``): 250 safe prompts that look unsafe, 200 unsafe contrasts.

For the benign prompts (package harmless, shared harmless, XSTest safe) with the highest
posterior it lists the nearest training prompts (cosine in the map's PCA subspace,
``eval.gate_report``). Writes ``experiments/results/gate-real-traffic.json``.

Usage: .venv/bin/python experiments/gate_real_traffic.py [--n-harmless 200]
"""

import argparse
import csv
import json
import time
from pathlib import Path

import torch

import tl_ot_ablation as tlo
from tl_ot_ablation import CollectOptions
from tl_ot_ablation.eval.gate_report import OPEN, nearest_training, training_rows
from tl_ot_ablation.eval.metrics import with_ci
from tl_ot_ablation.io import atomic
from tl_ot_ablation.lens.collect import collect_activations

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
LAYER = 17
BENIGN = ("package_harmless", "shared_harmless", "xstest_safe")


class _Recorded:
    """What ``nearest_training`` reads from a ``GateRecorder``: the map and per-set values."""

    def __init__(self, gate_map, values: dict[str, dict[str, torch.Tensor]]) -> None:
        self.gate_map = gate_map
        self._values = values

    def values(self, kind: str, what: str = "last") -> torch.Tensor:
        return self._values.get(kind, {}).get(what, torch.empty(0, dtype=torch.float64))


def _instructions(path: Path) -> list[str]:
    return [row["instruction"] for row in json.loads(path.read_text())]


def _xstest() -> dict[str, list[str]]:
    with (SHARED / "xstest" / "xstest_prompts.csv").open(encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    return {
        "xstest_safe": [r["prompt"] for r in rows if r["label"] == "safe"],
        "xstest_unsafe": [r["prompt"] for r in rows if r["label"] == "unsafe"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-harmless", type=int, default=200)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "experiments/results/gate-real-traffic.json"
    )
    args = parser.parse_args()
    start = time.perf_counter()
    model = tlo.load_model()
    train = tlo.default_prompts("harmful"), tlo.default_prompts("harmless")
    fitted = tlo.fit_ot_ablation(
        model,
        *train,
        layers=[LAYER],
        collect=tlo.CollectOptions(progress=False),
    )
    hook = f"blocks.{LAYER}.hook_resid_pre"
    gate_map = fitted[hook]
    sets = {
        "package_harmful": tlo.default_prompts("harmful", "eval"),
        "package_harmless": tlo.default_prompts("harmless", "eval"),
        "shared_harmful": _instructions(SHARED / "harmful_val.json"),
        "shared_harmless": _instructions(SHARED / "harmless_val.json")[: args.n_harmless],
        **_xstest(),
    }
    values: dict[str, dict[str, torch.Tensor]] = {}
    summary = {}
    for kind, prompts in sets.items():
        rows = collect_activations(
            model,
            prompts,
            hook,
            CollectOptions(positions="last", progress=False),
        )[hook]
        rows = rows.to(gate_map.basis.components.dtype)
        posterior = torch.sigmoid(gate_map.harmful_log_odds(rows).double())
        values[kind] = {"last": posterior, "z": gate_map.basis.project(rows).double()}
        summary[kind] = {
            "n": len(prompts),
            "mean": with_ci(posterior, seed=0).to_dict(),
            "median": float(posterior.median()),
            "share_open": with_ci((posterior > OPEN).double(), seed=0).to_dict(),
            "share_above_0.1": float((posterior > 0.1).double().mean()),
            "per_prompt": [
                {"prompt": p, "posterior": float(f"{v:.6g}")}
                for p, v in zip(prompts, posterior.tolist(), strict=True)
            ],
        }
        print(
            f"{kind:18s} n={len(prompts):3d} mean {float(posterior.mean()):.3f} "
            f"open {float((posterior > OPEN).double().mean()):.3f}",
            flush=True,
        )
    training = training_rows(model, hook, *train)
    top = {}
    for kind in BENIGN:  # nearest_training reads the sets it calls benign: harmless, xstest_safe
        alias = "harmless" if kind != "xstest_safe" else "xstest_safe"
        one = _Recorded(gate_map, {alias: values[kind]})
        top[kind] = nearest_training(one, {alias: sets[kind]}, training, n_top=8)
    record = {
        "what": "gate posterior P(harmful | z) at the last prompt token, no edit applied",
        "command": "python experiments/gate_real_traffic.py"
        + (f" --n-harmless {args.n_harmless}" if args.n_harmless != 200 else ""),
        "model": model.cfg.model_name,
        "layer": LAYER,
        "map": {k: fitted.metadata[k] for k in ("estimator", "gate", "gate_prior", "n_components")},
        "open_threshold": OPEN,
        "n_train": [len(train[0]), len(train[1])],
        "sets": summary,
        "top_benign": top,
        "seconds": round(time.perf_counter() - start, 1),
    }
    atomic.write_text(args.out, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out} in {record['seconds']} s")


if __name__ == "__main__":
    main()
