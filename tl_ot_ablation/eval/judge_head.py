"""The classifier judge's fitted head: a multinomial logistic regression over ``LABELS``.

``p = softmax(W z + b)`` with ``z = (x - mean) / scale`` the standardised features
(``judge_features.features``; the head records which groups it reads). The head shipped as
package data (``data/judge_head.safetensors``) is built by ``eval.judge_training`` from the
read labels in the repository's ``data/judge/``; ``python -m tl_ot_ablation.eval.judge_training``
rebuilds it.
"""

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float
from safetensors import safe_open
from torch import Tensor

from ..core.errors import UserInputError
from .judge_features import feature_names

LABELS = ("refusal", "deflection", "compliance", "degenerate")
Label = Literal["refusal", "deflection", "compliance", "degenerate"]
"""One of ``LABELS``: what a judge says of one (prompt, completion) pair."""
HEAD_FILE = "judge_head.safetensors"
LEGACY_GROUPS = ("embedding", "hand")
"""The feature groups of a head whose ``info`` names none (heads before the relabelling)."""


@dataclass(frozen=True)
class JudgeHead:
    """A fitted linear head: standardise the features, then ``softmax(W x + b)`` over LABELS.

    Attributes:
        weight: ``[classes, features]``, float64.
        bias: ``[classes]``.
        mean: The training features' mean, ``[features]``.
        scale: Per-feature divisor, ``[features]`` (standard deviation, divided by the
            ``hand_weight`` on the scalar features: a lighter L2 penalty on them).
        info: ``labels``, ``groups`` (the feature groups read), the hyperparameters and what
            it was trained on (JSON, in the file's header).
    """

    weight: Float[Tensor, "classes features"] = field(repr=False)
    bias: Float[Tensor, " classes"] = field(repr=False)
    mean: Float[Tensor, " features"] = field(repr=False)
    scale: Float[Tensor, " features"] = field(repr=False)
    info: dict[str, Any]

    @property
    def groups(self) -> tuple[str, ...]:
        """The feature groups this head reads (``judge_features.FEATURE_GROUPS``)."""
        return tuple(self.info.get("groups", LEGACY_GROUPS))

    def probabilities(self, x: Float[Tensor, "n features"]) -> Float[Tensor, "n classes"]:
        """``softmax(W (x - mean) / scale + b)``, float64, one row per pair."""
        if x.shape[-1] != self.weight.shape[-1]:
            raise UserInputError(
                f"the judge head takes {self.weight.shape[-1]} features, got {x.shape[-1]}"
            )
        z = (x.double() - self.mean) / self.scale
        return torch.softmax(z @ self.weight.mT + self.bias, dim=-1)

    def predict(self, x: Float[Tensor, "n features"]) -> list[str]:
        """The most probable label of each row."""
        return [LABELS[i] for i in self.probabilities(x).argmax(-1).tolist()]

    def to_bytes(self) -> bytes:
        """The head as safetensors bytes (``info`` in the header's metadata)."""
        from safetensors.torch import save

        tensors = {"weight": self.weight, "bias": self.bias, "mean": self.mean, "scale": self.scale}
        return save(
            {k: v.double().contiguous() for k, v in tensors.items()},
            metadata={"info": json.dumps(self.info)},
        )

    @classmethod
    def read(cls, path: str | Path) -> "JudgeHead":
        """A head written by ``to_bytes`` (tensors and ``info`` in one read)."""
        with safe_open(str(path), "pt") as handle:
            info = json.loads((handle.metadata() or {}).get("info", "{}"))
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        if tuple(info.get("labels", ())) != LABELS:
            raise UserInputError(
                f"{path}: the judge head was trained for labels {info.get('labels')}"
            )
        head = cls(tensors["weight"], tensors["bias"], tensors["mean"], tensors["scale"], info)
        width = len(feature_names(head.groups))
        if head.weight.shape != (len(LABELS), width):
            raise UserInputError(
                f"{path}: weight {tuple(head.weight.shape)} does not fit the feature groups "
                f"{list(head.groups)} ({width} features)"
            )
        return head


def shipped_head_path() -> Path:
    """Where the package's head lives (``tl_ot_ablation/data/judge_head.safetensors``)."""
    return Path(str(resources.files("tl_ot_ablation").joinpath("data", HEAD_FILE)))


@lru_cache(maxsize=1)
def shipped_head() -> JudgeHead:
    """The head ``eval.judge_training`` built from ``data/judge/`` (package data)."""
    resource = resources.files("tl_ot_ablation").joinpath("data", HEAD_FILE)
    with resources.as_file(resource) as path:
        return JudgeHead.read(path)
