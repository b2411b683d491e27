"""A linear probe that tells intervened activations from clean ones: the monitor's reference.

Logistic regression separating clean from intervened activations of *training* prompts (it
knows the attack: the supervised reference the unsupervised ``core.monitor`` scores are judged
against). It is fitted by torch's L-BFGS in float64 rather than scikit-learn (the test oracle)
to keep the package's dependencies and tensors as they are.
"""

import math
import warnings
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from .errors import UserInputError
from .tensor_dataclass import TensorDataclass
from .validate import check_finite, check_float_tensor

DEFAULT_PROBE_L2 = 1e-2


def check_probe_rows(rows: object, name: str) -> Tensor:
    tensor = check_float_tensor(rows, name)
    if tensor.ndim != 2 or tensor.shape[0] < 1:
        raise UserInputError(
            f"{name} must have shape [n, d_model] with n >= 1, got {tuple(tensor.shape)}"
        )
    check_finite(tensor, name)
    return tensor


@dataclass(frozen=True, eq=False)
class LinearProbe(TensorDataclass):
    """Logistic regression that tells intervened activations from clean ones (supervised).

    Features are standardised with the training rows' mean and standard deviation; the logit
    is ``((x − mean) / scale) · weight + bias`` (the ``probe`` score: higher = looks
    intervened). ``fit`` minimises the class-balanced cross-entropy
    ``½ mean_clean log(1 + e^{s}) + ½ mean_intervened log(1 + e^{−s}) + ½ l2 ‖weight‖²``
    (bias unpenalised), strictly convex, with L-BFGS in float64 from zero.

    Attributes:
        mean: Feature means, ``[d_model]``.
        scale: Feature standard deviations (floored), ``[d_model]``.
        weight: Weights on the standardised features, ``[d_model]``.
        bias: Intercept, ``[]``.
        l2: The L2 penalty it was fitted with.

    Example:
        >>> clean, edited = torch.randn(50, 4), torch.randn(50, 4) + 3
        >>> probe = LinearProbe.fit(clean, edited)
        >>> bool(probe(edited).mean() > probe(clean).mean())
        True
    """

    mean: Float[Tensor, " d_model"] = field(repr=False)
    scale: Float[Tensor, " d_model"] = field(repr=False)
    weight: Float[Tensor, " d_model"] = field(repr=False)
    bias: Float[Tensor, ""] = field(repr=False)
    l2: float = DEFAULT_PROBE_L2

    EVENT_DIMS: ClassVar[dict[str, int]] = {"mean": 1, "scale": 1, "weight": 1, "bias": 0}
    _SCALE_FLOOR: ClassVar[float] = 1e-6  # relative to the largest feature's spread

    @classmethod
    def fit(
        cls,
        clean: Float[Tensor, "n d_model"],
        intervened: Float[Tensor, "m d_model"],
        *,
        l2: float = DEFAULT_PROBE_L2,
        max_iter: int = 500,
    ) -> "LinearProbe":
        """Fit on clean and intervened activation rows of training prompts.

        Args:
            clean: Unmodified activations, ``[n, d_model]``.
            intervened: Activations under the intervention, ``[m, d_model]``.
            l2: L2 penalty on the standardised weights (> 0: keeps separable data finite).
            max_iter: L-BFGS iterations.

        Raises:
            ValueError: on bad shapes, non-finite rows, ``l2 <= 0`` or constant features.

        Warns:
            UserWarning: if L-BFGS stopped before the gradient vanished.
        """
        clean = check_probe_rows(clean, "clean")
        intervened = check_probe_rows(intervened, "intervened")
        if clean.shape[-1] != intervened.shape[-1]:
            raise UserInputError(
                "clean and intervened activations must share d_model; got "
                f"{tuple(clean.shape)} and {tuple(intervened.shape)}"
            )
        if not (isinstance(l2, int | float) and 0 < l2 < math.inf):
            raise UserInputError(f"l2 must be a finite number > 0, got {l2!r}")
        if not (isinstance(max_iter, int) and max_iter >= 1):
            raise UserInputError(f"max_iter must be an integer >= 1, got {max_iter!r}")
        with torch.inference_mode(False), torch.enable_grad():
            # Clones made outside inference mode: inputs collected under it cannot take part.
            x = torch.cat([clean, intervened]).detach().to(torch.float64).clone()
            mean = x.mean(0)
            std = x.std(0, correction=0)
            top = float(std.max())
            if top == 0:
                raise UserInputError("every feature is constant across the rows; nothing to probe")
            scale = std.clamp_min(cls._SCALE_FLOOR * top)
            features = (x - mean) / scale
            n = clean.shape[0]
            sign = torch.cat([torch.full((n,), -1.0), torch.ones(intervened.shape[0])]).to(x)
            balance = torch.cat(
                [torch.full((n,), 0.5 / n), torch.full((intervened.shape[0],), 0.5 / (len(x) - n))]
            ).to(x)
            weight = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
            bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
            optimizer = torch.optim.LBFGS(
                [weight, bias],
                lr=1,
                max_iter=max_iter,
                tolerance_grad=1e-10,
                tolerance_change=1e-14,
                history_size=20,
                line_search_fn="strong_wolfe",
            )

            def objective() -> Tensor:
                logits = features @ weight + bias
                fit = (balance * torch.nn.functional.softplus(-sign * logits)).sum()
                return fit + 0.5 * l2 * weight.square().sum()

            def closure() -> Tensor:
                optimizer.zero_grad()
                loss = objective()
                loss.backward()
                return loss

            optimizer.step(closure)
            grad_w, grad_b = torch.autograd.grad(objective(), [weight, bias])
            gradient = float(torch.cat([grad_w, grad_b.reshape(1)]).abs().max())
        if gradient > 1e-6:
            warnings.warn(
                f"LinearProbe.fit stopped with gradient {gradient:.2g} after max_iter={max_iter} "
                "L-BFGS iterations; raise max_iter or l2",
                stacklevel=2,
            )
        return cls(mean, scale, weight.detach(), bias.detach(), l2=float(l2))

    @property
    def d_model(self) -> int:
        """Width of the activations it scores."""
        return self.weight.shape[-1]

    def __call__(self, x: Float[Tensor, "*batch d_model"]) -> Float[Tensor, " *batch"]:
        """The ``probe`` score: the logit of "intervened" per row, float64."""
        check_float_tensor(x, "x")
        check_finite(x, "x")
        if x.shape[-1] != self.d_model:
            raise UserInputError(
                f"LinearProbe expects activations with d_model={self.d_model}, got {tuple(x.shape)}"
            )
        probe = self.to(device=x.device, dtype=torch.float64)
        features = (x.to(torch.float64) - probe.mean) / probe.scale
        return features @ probe.weight + probe.bias
