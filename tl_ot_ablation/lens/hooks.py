"""The one place that knows TransformerLens's hook contract ``fn(tensor, *, hook) -> tensor``.

``as_hook`` wraps any ``Tensor -> Tensor`` intervention (``GaussianOTMap``, the baselines, or
your own callable) as a forward hook on a residual-stream hook point. The hook never edits the
activation in place, computes in float32 (float64 for float64 models) and returns the
activation's dtype; it moves the intervention to the activation's device once and keeps it
there, so a model dispatched over several GPUs runs each layer's map where that layer lives.

Positions (where along the sequence the edit applies):

- ``"post_instruction"`` (default for maps): the last ``n_post_instruction`` positions of a
  multi-token pass (the chat template's tokens after the user message) and every single-token
  pass (each token generated with the KV cache);
- ``"last"``: the last position of a multi-token pass and every generated token;
- ``"all"``: every position, the first one included (what Arditi et al. do for direction
  ablation; a transport map fitted on post-instruction tokens usually wrecks the first
  position, an attention sink whose norm is ~150x the others);
- a ``slice`` of positions, applied to every pass.
"""

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.errors import UserInputError

PositionSpec = Literal["all", "post_instruction", "last"] | slice


@runtime_checkable
class Intervention(Protocol):
    """Anything that maps ``[*batch, d_model]`` activations to new ones of the same shape."""

    def __call__(self, x: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_model"]: ...


def check_positions(positions: object, n_post_instruction: int | None) -> None:
    """Raise unless ``positions`` is a valid position spec (with the length it needs)."""
    if isinstance(positions, slice):
        return
    if positions not in ("all", "post_instruction", "last"):
        raise UserInputError(
            f"positions must be 'all', 'post_instruction', 'last' or a slice, got {positions!r}"
        )
    if positions == "post_instruction" and not (
        isinstance(n_post_instruction, int) and n_post_instruction >= 1
    ):
        raise UserInputError(
            "positions='post_instruction' needs n_post_instruction, the number of chat-template "
            "tokens after the user message (tl_ot_ablation.post_instruction_length(tokenizer))"
        )


def edited_slice(seq_len: int, positions: PositionSpec, n_post_instruction: int | None) -> slice:
    """The positions of a ``seq_len``-token pass that the edit applies to."""
    if isinstance(positions, slice):
        return positions
    if positions == "all" or seq_len == 1:
        return slice(None)
    if positions == "last":
        return slice(-1, None)
    assert n_post_instruction is not None
    return slice(-n_post_instruction, None)


@dataclass
class InterventionHook:
    """A TransformerLens forward hook applying ``intervention`` at ``positions``.

    Attributes:
        intervention: The ``Tensor -> Tensor`` edit.
        positions: Where along the sequence to apply it (see the module docstring).
        n_post_instruction: Length of the post-instruction span, for that position spec.
    """

    intervention: Intervention
    positions: PositionSpec = "all"
    n_post_instruction: int | None = None
    _placed: dict[torch.device, Intervention] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        check_positions(self.positions, self.n_post_instruction)

    def _on(self, device: torch.device) -> Intervention:
        if device not in self._placed:
            mover = getattr(self.intervention, "to", None)
            self._placed[device] = mover(device) if callable(mover) else self.intervention
        return self._placed[device]

    def __call__(self, resid: Float[Tensor, "batch pos d_model"], *, hook: Any) -> Tensor:
        intervention = self._on(resid.device)
        where = edited_slice(resid.shape[1], self.positions, self.n_post_instruction)
        if where == slice(None):
            return intervention(resid)
        edited = resid.clone()
        edited[:, where] = intervention(resid[:, where])
        return edited


def as_hook(
    intervention: Intervention,
    *,
    positions: PositionSpec = "all",
    n_post_instruction: int | None = None,
) -> InterventionHook:
    """Wrap a ``Tensor -> Tensor`` intervention as a hook ``(resid, *, hook) -> resid``."""
    return InterventionHook(intervention, positions, n_post_instruction)


def fwd_hooks(
    intervention: Intervention,
    *hook_names: str,
    positions: PositionSpec = "all",
    n_post_instruction: int | None = None,
) -> list[tuple[str, InterventionHook]]:
    """``[(name, as_hook(intervention, ...)) for name in hook_names]``, for ``model.hooks``."""
    if not hook_names:
        raise UserInputError("name at least one hook point, e.g. 'blocks.6.hook_resid_pre'")
    hook = as_hook(intervention, positions=positions, n_post_instruction=n_post_instruction)
    return [(name, hook) for name in hook_names]
