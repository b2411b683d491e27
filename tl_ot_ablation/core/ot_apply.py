"""How a fitted transport map edits activations: the fused hook path and the gate.

``GaussianOTMap`` (``ot_map``) holds the fitted Gaussians and the transport matrix; this mixin
turns them into the edit a hook applies. Ungated, the edit folds into two thin matmuls per
position (``_fused``); gated, it keeps the subspace coordinates ``z`` the gate needs
(``_subspace_fused``). The fused tensors are cached per map object, outside inference mode, so
a map built once serves every forward pass.
"""

from functools import cached_property

import torch
from jaxtyping import Float
from torch import Tensor

from . import gate as gating
from .pca import PCABasis
from .tensor_dataclass import StrengthMixin
from .validate import cast_back, check_float_tensor, compute_dtype


class TransportApplication(StrengthMixin):
    """The application half of ``GaussianOTMap``, which declares these fields."""

    basis: PCABasis
    mean_source: Tensor
    mean_target: Tensor
    cov_source: Tensor
    cov_target: Tensor
    matrix: Tensor
    strength: float
    gate: str
    gate_prior: float
    preserve_norm: bool
    part: str

    @property
    def n_components(self) -> int:
        return self.basis.n_components

    @property
    def d_model(self) -> int:
        return self.basis.d_model

    @cached_property
    def _fused(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(W_in [d,k], bias [k], V [k,d])`` with ``edit(x) = (x @ W_in + bias) @ V``.

        Expands ``s·((z - m_s) @ (A - I) + m_t - m_s) @ V`` with ``z = (x - μ) @ Vᵀ``, so an
        ungated hook costs two thin matmuls per position.
        """
        with torch.inference_mode(False), torch.no_grad():  # cached: never an inference tensor
            v, offset, shift, bias = self._subspace_fused
            w_in = v.mT @ shift
            return w_in, bias - (offset.unsqueeze(-2) @ shift).squeeze(-2), v

    @cached_property
    def _subspace_fused(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(V [k,d], offset [k], shift [k,k], bias [k])`` with ``z = x @ Vᵀ - offset`` and
        ``edit(x) = (z @ shift + bias) @ V``: the gated hook needs ``z`` for the gate, so it
        takes this route (two thin matmuls and ``k × k`` work per position)."""
        with torch.inference_mode(False), torch.no_grad():
            v = self.basis.components
            eye = torch.eye(self.n_components, dtype=v.dtype, device=v.device)
            shift = self.strength * (self.matrix - eye)
            offset = (self.basis.mean.unsqueeze(-2) @ v.mT).squeeze(-2)
            bias = -(self.mean_source.unsqueeze(-2) @ shift).squeeze(-2)
            if self.part == "full":
                bias = bias + self.strength * (self.mean_target - self.mean_source)
            return v, offset, shift, bias

    @cached_property
    def _gate_factors(self) -> tuple[Tensor, Tensor]:
        """Cholesky factors of the stored source and target covariances, for the gate."""
        with torch.inference_mode(False), torch.no_grad():
            return (
                torch.linalg.cholesky(self.cov_source.double()).to(self.cov_source.dtype),
                torch.linalg.cholesky(self.cov_target.double()).to(self.cov_target.dtype),
            )

    def harmful_log_odds(self, x: Float[Tensor, "*batch d_model"]) -> Float[Tensor, " *batch"]:
        """``logit P(harmful | x)`` under the fitted Gaussians (and ``gate_prior``), per row."""
        computed = x.to(compute_dtype(check_float_tensor(x, "x").dtype))
        v, offset, _, _ = (t.to(computed.dtype) for t in self._subspace_fused)
        z = self._as_rows(computed, self.d_model) @ v.mT - offset.unsqueeze(-2)
        return self._log_odds(z).reshape(x.shape[:-1])

    def _log_odds(self, z: Tensor) -> Tensor:
        """Log-odds per row of subspace coordinates ``z`` (``[*batch, n, k]``, or any leading
        dims if the map is unbatched)."""
        dtype = z.dtype
        chol_s, chol_t = (t.to(dtype) for t in self._gate_factors)
        flat = z.reshape(-1, z.shape[-1]) if len(self.batch_shape) == 0 else z
        log_odds = gating.harmful_log_odds(
            flat,
            self.mean_source.to(dtype),
            chol_s,
            self.mean_target.to(dtype),
            chol_t,
            self.gate_prior,
        )
        return log_odds.reshape(z.shape[:-1])

    def edit(self, x: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_model"]:
        """The displacement ``map(x) - x``, in the compute dtype (float64 only for float64 x)."""
        return self._edit(x.to(compute_dtype(check_float_tensor(x, "x").dtype)))

    def _edit(self, x: Tensor) -> Tensor:
        """``edit`` of an activation already in its compute dtype."""
        rows = self._as_rows(x, self.d_model)
        if self.gate == "none":
            w_in, bias, v = (t.to(x.dtype) for t in self._fused)
            coefficients = rows @ w_in + bias.unsqueeze(-2)
        else:
            v, offset, shift, bias = (t.to(x.dtype) for t in self._subspace_fused)
            z = rows @ v.mT - offset.unsqueeze(-2)
            weight = gating.gate_weight(self._log_odds(z), self.gate)  # type: ignore[arg-type]
            coefficients = (z @ shift + bias.unsqueeze(-2)) * weight.unsqueeze(-1)
        delta = coefficients @ v
        if self.preserve_norm:
            moved = rows + delta
            scale = rows.norm(dim=-1, keepdim=True) / moved.norm(dim=-1, keepdim=True).clamp_min(
                torch.finfo(rows.dtype).tiny
            )
            delta = moved * scale - rows
        return delta.reshape(x.shape)

    def __call__(self, x: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_model"]:
        """Transported activations, a new tensor in ``x``'s dtype and device."""
        check_float_tensor(x, "x")  # an integer x would come back truncated
        if self.strength == 0:
            return x.clone()
        computed = x.to(compute_dtype(x.dtype))  # one cast, shared by the sum and the edit
        return cast_back(computed + self._edit(computed), x, type(self).__name__, self.strength)
