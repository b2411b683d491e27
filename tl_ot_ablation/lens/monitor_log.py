"""What an activation monitor's hooks record during a forward pass, and the hook itself.

``MonitorHook`` is an observe-only TransformerLens hook: it scores the rows a pass gives at its
hook point (``score_rows``) and appends them to a ``ScoreLog``, never editing the activation.
The log tells prompt passes from the one-token passes of cached generation, so it can return
per-prompt scores and per-generated-token scores (``lens.monitor`` explains what the scores
mean and where a monitor must sit).
"""

from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.monitor import GaussianMonitor
from ..core.probe import LinearProbe

Scores = dict[str, dict[int, Tensor]]
"""``{score_name: {layer: scores}}``, the shape every scoring method returns."""


@dataclass
class ScoreLog:
    """What the monitor's hooks recorded, one entry per hook call (layer by layer, in order).

    Attributes:
        entries: ``(layer, single_token, {score: [batch]})`` per call; ``single_token`` marks
            a one-token pass (a token generated with the KV cache).
    """

    entries: list[tuple[int, bool, dict[str, Tensor]]] = field(default_factory=list)

    def clear(self) -> None:
        """Forget everything recorded so far."""
        self.entries.clear()

    def prompt_scores(self) -> Scores:
        """Per-prompt scores of every multi-token pass, concatenated in order: ``[n]``."""
        out: dict[str, dict[int, list[Tensor]]] = {}
        for layer, single, scores in self.entries:
            if not single:
                for name, value in scores.items():
                    out.setdefault(name, {}).setdefault(layer, []).append(value)
        return {s: {layer: torch.cat(v) for layer, v in by.items()} for s, by in out.items()}

    def token_scores(self) -> Scores:
        """Per-generated-token scores, ``[n, steps]``: the single-token passes after each
        multi-token (prompt) pass, batch by batch. Generating ``N`` tokens feeds back tokens
        1..N-1, so ``steps = N - 1``. A batch that stopped early is padded with NaN; tokens
        generated after a sequence's end (padding) are scored like any other."""
        groups: dict[str, dict[int, list[tuple[int, list[Tensor]]]]] = {}
        for layer, single, scores in self.entries:
            for name, value in scores.items():
                per_layer = groups.setdefault(name, {}).setdefault(layer, [])
                if not single:
                    per_layer.append((len(value), []))
                elif per_layer:
                    per_layer[-1][1].append(value)
        out: Scores = {}
        for name, by_layer in groups.items():
            out[name] = {}
            for layer, batches in by_layer.items():
                steps = max(len(tokens) for _, tokens in batches)
                blocks = []
                for size, tokens in batches:
                    block = torch.full((size, steps), torch.nan, dtype=torch.float64)
                    if tokens:
                        block[:, : len(tokens)] = torch.stack(tokens, dim=-1)
                    blocks.append(block)
                out[name][layer] = torch.cat(blocks)
        return out


@dataclass
class MonitorHook:
    """An observe-only TransformerLens hook: scores the pass's rows into ``log``, returns
    ``None`` (the activation is never edited).

    A multi-token pass is scored at its last ``n_positions`` positions (left padding keeps
    them real tokens) and each prompt gets the mean of those rows' scores; a single-token pass
    (generation with the KV cache) is scored at its one position.
    """

    monitor: GaussianMonitor
    probe: LinearProbe | None
    layer: int
    n_positions: int
    log: ScoreLog
    _placed: dict[torch.device, tuple[GaussianMonitor, LinearProbe | None]] = field(
        default_factory=dict, repr=False
    )

    def _on(self, device: torch.device) -> tuple[GaussianMonitor, LinearProbe | None]:
        if device not in self._placed:
            probe = None if self.probe is None else self.probe.to(device)
            self._placed[device] = (self.monitor.to(device), probe)
        return self._placed[device]

    def __call__(self, resid: Float[Tensor, "batch pos d_model"], *, hook: Any) -> None:
        single = resid.shape[1] == 1
        rows = resid if single else resid[:, -self.n_positions :]
        monitor, probe = self._on(resid.device)
        with torch.no_grad():
            scores = score_rows(monitor, probe, rows)
        self.log.entries.append(
            (self.layer, single, {name: v.mean(-1).cpu() for name, v in scores.items()})
        )


def score_rows(
    monitor: GaussianMonitor, probe: LinearProbe | None, rows: Float[Tensor, "*batch d_model"]
) -> dict[str, Float[Tensor, " *batch"]]:
    """Every score of ``rows`` at one layer (the probe's only when there is one)."""
    scores = monitor.scores(rows)
    if probe is not None:
        scores["probe"] = probe(rows)
    return scores
