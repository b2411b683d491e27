"""Refusal ablation by Gaussian optimal transport in a PCA subspace, for TransformerLens.

The core (``GaussianStats``, ``GaussianOTMap`` and the baselines) is pure tensors in and out;
``collect_*``, ``fit_*``, ``InterventionSet`` and ``generate`` connect it to TransformerLens 4.x
bridges. See the README for the formula and a quickstart.
"""

from .baselines import ActAdd, DirectionAblation, PerNeuronOT
from .collect import collect_activations, collect_stats
from .distributed import all_reduce_stats
from .fit import fit_actadd, fit_direction_ablation, fit_ot_ablation
from .generation import generate
from .hooks import as_hook, fwd_hooks
from .intervention_set import InterventionSet
from .io import load, save
from .models import load_model
from .ot_map import GaussianOTMap, MeanShift, OTDiagnostics
from .pca import PCABasis
from .prompts import default_prompts, format_chat, load_prompts, post_instruction_length
from .selection import select_layers
from .stats import GaussianStats

__version__ = "0.1.0"

__all__ = [
    "ActAdd",
    "DirectionAblation",
    "GaussianOTMap",
    "GaussianStats",
    "InterventionSet",
    "MeanShift",
    "OTDiagnostics",
    "PCABasis",
    "PerNeuronOT",
    "__version__",
    "all_reduce_stats",
    "as_hook",
    "collect_activations",
    "collect_stats",
    "default_prompts",
    "fit_actadd",
    "fit_direction_ablation",
    "fit_ot_ablation",
    "format_chat",
    "fwd_hooks",
    "generate",
    "load",
    "load_model",
    "load_prompts",
    "post_instruction_length",
    "save",
    "select_layers",
]
