"""The gate on real traffic: how harmful a gated map finds each held-out prompt, and why.

A gated map (``core.gate``) edits ``x + g(z)·(T(x) − x)`` with ``g = P(harmful | z)``. On the
package's own harmless prompts it stays shut; on everyday prompts it may open where the model
itself half-refuses, or on alarming-but-safe words. ``GateRecorder`` is an observe-only hook at
the map's (first) hook point, registered *before* the edit, so it sees what the gate sees; it
rides on the generation passes ``compare`` makes anyway (no extra pass) and records, for every
prompt of each set (held-out harmful and harmless, and the XSTest-style safe and unsafe ones
when given):

- ``posterior``: ``P(harmful | z)`` at the **last prompt token** (the position that yields the
  first generated token, where the KL is measured);
- ``posterior_max``: its maximum over the post-instruction positions where the map edits the
  prompt (only for maps applied there; elsewhere it equals ``posterior``);
- the last token's coordinates in the map's PCA subspace.

``nearest_training`` then lists, for the benign prompts (harmless, XSTest safe) with the
largest posterior, the training prompts nearest to them (cosine of last-token PCA coordinates)
and their class: "which prompts open it and why". It costs one partial pass (up to the map's
layer) over the training prompts, so it runs only when ``CompareSettings.gate_neighbours`` > 0.
"""

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..core.ot_map import GaussianOTMap
from ..lens.collect import CollectOptions, collect_activations, layer_of
from ..lens.intervention_set import InterventionSet
from .metrics import with_ci

BENIGN = ("harmless", "xstest_safe")
"""The sets where an open gate is a misfire (``nearest_training`` explains their top prompts)."""
GATE_TOP = 5
"""How many of the benign prompts with the largest posterior get their nearest neighbours."""
OPEN = 0.5
"""A gate counts as open above this posterior (where the "hard" gate switches on)."""


def _rounded(values: Tensor) -> list[float]:
    return [float(f"{v:.6g}") for v in values.tolist()]


@dataclass
class GateRecorder:
    """Observe-only hooks that record a gated map's posterior per prompt (module docstring).

    Attributes:
        hook: The hook point of the map recorded (the first gated one of the set).
        gate_map: The map (its gate, PCA basis and prior).
        post_instruction: Length of the post-instruction span the map edits (``None``: the map
            is applied elsewhere, so ``posterior_max`` is the last token's).
        logs: ``{set: {"last" | "max" | "z": [per-batch tensors]}}``.
        top: The benign prompts that open the gate most, with their nearest training prompts
            (``nearest_training``).
    """

    hook: str
    gate_map: GaussianOTMap
    post_instruction: int | None = None
    logs: dict[str, dict[str, list[Tensor]]] = field(default_factory=dict, repr=False)
    top: list[dict[str, Any]] = field(default_factory=list)
    _placed: dict[torch.device, GaussianOTMap] = field(default_factory=dict, repr=False)

    @classmethod
    def for_set(cls, interventions: InterventionSet | None) -> "GateRecorder | None":
        """A recorder at ``interventions``' first gated, unbatched Gaussian map (``None``: the
        set has no gate, e.g. direction ablation or ``gate="none"``)."""
        if interventions is None:
            return None
        gated = [
            (name, item)
            for name, item in interventions.items()
            if isinstance(item, GaussianOTMap) and item.gate != "none" and not item.batch_shape
        ]
        if not gated:
            return None
        name, gate_map = min(gated, key=lambda pair: layer_of(pair[0]) or 0)
        span = interventions.n_post_instruction
        post = span if interventions.positions == "post_instruction" else None
        return cls(name, gate_map, post)

    def _on(self, device: torch.device) -> GaussianOTMap:
        if device not in self._placed:
            self._placed[device] = self.gate_map.to(device)
        return self._placed[device]

    def hooks(self, kind: str) -> list[tuple[str, Any]]:
        """The observe-only hook recording the prompt passes of set ``kind`` (one-token passes,
        i.e. generated tokens, are skipped). Put it before the edit's hooks."""
        log = self.logs.setdefault(kind, {"last": [], "max": [], "z": []})

        def record(resid: Tensor, *, hook: Any) -> None:
            if resid.shape[1] == 1:
                return None
            gate_map = self._on(resid.device)
            with torch.no_grad():
                span = (
                    resid[:, -self.post_instruction :] if self.post_instruction else resid[:, -1:]
                )
                log_odds = gate_map.harmful_log_odds(span).double()
                last = resid[:, -1].to(gate_map.basis.components.dtype)
                log["last"].append(torch.sigmoid(log_odds[:, -1]).cpu())
                log["max"].append(torch.sigmoid(log_odds.max(dim=1).values).cpu())
                log["z"].append(gate_map.basis.project(last).double().cpu())
            return None

        return [(self.hook, record)]

    def values(self, kind: str, what: str = "last") -> Tensor:
        """What was recorded for set ``kind``: ``"last"`` / ``"max"`` posteriors ``[n]`` or the
        last-token PCA coordinates ``"z"`` ``[n, k]``."""
        chunks = self.logs.get(kind, {}).get(what, [])
        if not chunks:
            return torch.empty(0, dtype=torch.float64)
        return torch.cat(chunks)

    def summary(self, *, seed: int = 0) -> dict[str, Any]:
        """The ``gate`` entry of ``results.json`` (``record.GATE_KEYS``)."""
        kinds = [k for k in self.logs if self.values(k).numel()]
        posterior = {k: _rounded(self.values(k)) for k in kinds}
        opened = {k: with_ci((self.values(k) > OPEN).double(), seed=seed).to_dict() for k in kinds}
        summary: dict[str, Any] = {
            "hook": self.hook,
            "layer": layer_of(self.hook),
            "position": "last prompt token",
            "prior": self.gate_map.gate_prior,
            "posterior": posterior,
            "open": opened,
            "top": self.top,
        }
        if self.post_instruction:
            summary["posterior_max"] = {k: _rounded(self.values(k, "max")) for k in kinds}
        return summary


def _unit(rows: Tensor) -> Tensor:
    return rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def training_rows(
    model: Any,
    hook: str,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    batch_size: int = 16,
    system: str | None = None,
) -> tuple[Tensor, list[str], list[str]]:
    """Last-token activations of the training prompts at ``hook`` (one partial pass), with
    each row's prompt and class."""
    texts = [*harmful, *harmless]
    rows = collect_activations(
        model,
        texts,
        hook,
        CollectOptions(positions="last", batch_size=batch_size, system=system, progress=False),
    )[hook]
    classes = ["harmful"] * len(harmful) + ["harmless"] * len(harmless)
    return rows, texts, classes


def nearest_training(
    recorder: GateRecorder,
    prompts: Mapping[str, Sequence[str]],
    training: tuple[Tensor, list[str], list[str]],
    *,
    n_neighbours: int = 3,
    n_top: int = GATE_TOP,
) -> list[dict[str, Any]]:
    """For the ``n_top`` benign prompts (``BENIGN`` sets of ``prompts``) with the largest
    recorded posterior: their ``n_neighbours`` nearest training prompts by cosine of last-token
    coordinates in the map's PCA subspace, with each one's class."""
    rows, texts, classes = training
    gate_map = recorder.gate_map
    train_z = _unit(gate_map.basis.project(rows.to(gate_map.basis.components.dtype)).double())
    candidates = [
        (float(p), kind, index)
        for kind in BENIGN
        for index, p in enumerate(recorder.values(kind).tolist())
    ]
    out = []
    for posterior, kind, index in sorted(candidates, reverse=True)[:n_top]:
        z = _unit(recorder.values(kind, "z")[index])
        cosine = train_z @ z
        nearest = cosine.topk(min(n_neighbours, len(texts))).indices.tolist()
        neighbours = [
            {"prompt": texts[i], "class": classes[i], "cosine": round(float(cosine[i]), 4)}
            for i in nearest
        ]
        out.append(
            {
                "set": kind,
                "index": index,
                "prompt": prompts[kind][index],
                "posterior": float(f"{posterior:.6g}"),
                "neighbours": neighbours,
            }
        )
    return out


def explain_gates(
    model: Any,
    recorders: Mapping[str, GateRecorder],
    prompts: Mapping[str, Sequence[str]],
    train: tuple[Sequence[str], Sequence[str]],
    *,
    n_neighbours: int = 3,
    batch_size: int = 16,
    system: str | None = None,
) -> dict[str, float]:
    """Fill each recorder's ``top`` (``nearest_training``); the training prompts' rows are
    collected once per hook point. Returns the seconds spent per method (the extra cost)."""
    cache: dict[str, tuple[Tensor, list[str], list[str]]] = {}
    seconds = {}
    for name, recorder in recorders.items():
        start = time.perf_counter()
        if recorder.hook not in cache:
            cache[recorder.hook] = training_rows(
                model, recorder.hook, *train, batch_size=batch_size, system=system
            )
        recorder.top = nearest_training(
            recorder, prompts, cache[recorder.hook], n_neighbours=n_neighbours
        )
        seconds[name] = round(time.perf_counter() - start, 2)
    return seconds
