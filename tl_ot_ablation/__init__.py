"""Refusal ablation by Gaussian optimal transport in a PCA subspace, for TransformerLens.

The core (``GaussianStats``, ``GaussianOTMap`` and the baselines) is pure tensors in and out;
see the README for the formula and a quickstart.
"""

from .baselines import ActAdd, DirectionAblation, PerNeuronOT
from .io import load, save
from .ot_map import GaussianOTMap, MeanShift, OTDiagnostics
from .pca import PCABasis
from .stats import GaussianStats

__version__ = "0.1.0"

__all__ = [
    "ActAdd",
    "DirectionAblation",
    "GaussianOTMap",
    "GaussianStats",
    "MeanShift",
    "OTDiagnostics",
    "PCABasis",
    "PerNeuronOT",
    "__version__",
    "load",
    "save",
]
