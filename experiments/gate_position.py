"""Where along the prompt should the gate be read? Per position (today) or once, at the last token.

The gated map edits the post-instruction span (``<|im_end|>\\n<|im_start|>assistant\\n``, five
tokens on Qwen) with ``x + g(z)·(T(x) − x)``, ``g`` read at each position from that position's
own activation. The Gaussians are fitted on all five positions pooled, and at the
``<|im_start|>`` token harmful and harmless prompts overlap: on ``compare-shared-xstest`` the
gate was shut at the last token on all 39 everyday prompts but open somewhere in the span on 21
of them, and 8 of the 10 answers the map changed were among those. This script measures the
alternative: ``g`` read once per prompt at its last token (where the classes separate best) and
applied to the whole span; during decoding each new token is edited by its own gate, as today.

Fits the job-default map at layer 17 on the package's 256 + 256 training prompts, then for the
per-position gate and the last-token gate:

- the first-token KL on the package's 32 validation harmless prompts (what strengths are
  matched on) and on 64 everyday instructions of ``../shared/data/harmless_train.json``, at
  strengths 1, 1.5 and 2 (distribution: mean, median, p90, max, share above 0.01 nats);
- the judge's compliance on the package's 32 validation harmful prompts (64 greedy tokens) at
  strengths 1.5 and 2, and the share of the 32 held-out harmless answers identical to the
  unmodified model's at strength 2, for the last-token gate (the per-position gate's are in
  ``compare-default-timed``'s ``selection`` and damage table, the same fit and code path).

Writes ``experiments/results/gate-position.json``.
Usage: .venv/bin/python experiments/gate_position.py
"""

import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import tl_ot_ablation as tlo
from tl_ot_ablation import CollectOptions
from tl_ot_ablation.eval.common import judged_generation
from tl_ot_ablation.eval.damage import summarise
from tl_ot_ablation.eval.settings import CompareSettings
from tl_ot_ablation.eval.validation import first_logprobs, harmless_kl_per_prompt
from tl_ot_ablation.io import atomic
from tl_ot_ablation.lens.generation import GenerationOptions, generate
from tl_ot_ablation.lens.intervention_set import InterventionSet

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
LAYER = 17
HOOK = f"blocks.{LAYER}.hook_resid_pre"
SETTINGS = CompareSettings()  # batch size and system prompt as compare's


class LastTokenGate:
    """The map's ungated edit, weighted per prompt by the gate read at the last position of
    what the hook sees (the span's last token at prefill; the new token when decoding)."""

    def __init__(self, gated: Any, strength: float) -> None:
        self.gated = gated
        self.ungated = gated.with_options(gate="none").with_strength(strength)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        weight = torch.sigmoid(self.gated.harmful_log_odds(x[:, -1:]).double())  # [batch, 1]
        edit = self.ungated.edit(x)
        return (x + weight.unsqueeze(-1).to(edit.dtype) * edit).to(x.dtype)


def _as_set(fitted: InterventionSet, intervention: Any) -> InterventionSet:
    return InterventionSet(
        {HOOK: intervention},
        positions=fitted.positions,
        n_post_instruction=fitted.n_post_instruction,
    )


def _variants(fitted: InterventionSet, strength: float) -> dict[str, InterventionSet]:
    gated = fitted[HOOK]
    return {
        "per_position": fitted.with_strength(strength),
        "last_token": _as_set(fitted, LastTokenGate(gated, strength)),
    }


def _kl(model, prompts, reference, edit: InterventionSet) -> dict[str, float]:
    kl = harmless_kl_per_prompt(model, edit, prompts, reference, SETTINGS)
    out = {m: summarise(kl, m, 0.01) for m in ("mean", "median", "p90", "share_above")}
    return {k: float(f"{v:.4g}") for k, v in {**out, "max": float(kl.max())}.items()}


def main() -> None:
    warnings.filterwarnings("ignore", message="strength=.* extrapolates", category=UserWarning)
    start = time.perf_counter()
    model = tlo.load_model()
    train = tlo.default_prompts("harmful"), tlo.default_prompts("harmless")
    fitted = tlo.fit_ot_ablation(
        model, *train, layers=[LAYER], collect=CollectOptions(progress=False)
    )
    options = GenerationOptions(progress=False)
    sets = {
        "package_validation_harmless": tlo.default_prompts("harmless", "validation")[:32],
        "shared_harmless_train_64": [
            row["instruction"]
            for row in json.loads((SHARED / "harmless_train.json").read_text())[:64]
        ],
    }
    record: dict[str, Any] = {
        "what": "the gate read per position (today) vs once at the last token, layer 17",
        "command": "python experiments/gate_position.py",
        "kl": {},
        "judged_validation_harmful": {},
    }
    for name, prompts in sets.items():
        reference = first_logprobs(model, prompts, [], SETTINGS)
        for strength in (1.0, 1.5, 2.0):
            for variant, edit in _variants(fitted, strength).items():
                found = _kl(model, prompts, reference, edit)
                record["kl"].setdefault(name, {}).setdefault(variant, {})[str(strength)] = found
                print(f"{name} {variant} s={strength}: {found}", flush=True)
    harmful = tlo.default_prompts("harmful", "validation")[:32]
    for strength in (1.5, 2.0):
        edit = _variants(fitted, strength)["last_token"]
        *_, labels = judged_generation(
            model,
            harmful,
            edit.fwd_hooks(),
            max_new_tokens=64,
            batch_size=32,
            system=None,
            judge_method="classifier",
        )
        share = sum(label == "compliance" for label in labels) / len(labels)
        record["judged_validation_harmful"][str(strength)] = {
            "compliance": share,
            "labels": labels,
        }
        print(f"validation harmful, last_token s={strength}: compliance {share:.2f}", flush=True)
    held_out = tlo.default_prompts("harmless", "eval")[:32]
    plain = generate(model, held_out, max_new_tokens=64, options=options)
    edited = generate(
        model,
        held_out,
        fwd_hooks=_variants(fitted, 2.0)["last_token"].fwd_hooks(),
        max_new_tokens=64,
        options=options,
    )
    same = sum(a == b for a, b in zip(plain, edited, strict=True)) / len(plain)
    record["identical_held_out_harmless_last_token_s2"] = same
    print(f"held-out harmless identical, last_token s=2: {same:.2f}", flush=True)
    record["seconds"] = round(time.perf_counter() - start, 1)
    out = ROOT / "experiments/results/gate-position.json"
    atomic.write_text(out, json.dumps(record, indent=1) + "\n")
    print(f"wrote {out} in {record['seconds']} s")


if __name__ == "__main__":
    main()
