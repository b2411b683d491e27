"""Refusal ablation by Gaussian optimal transport in a PCA subspace, for TransformerLens.

Layers, each importing only those before it (``docs/architecture.md``): ``core``
(``GaussianStats``, ``GaussianOTMap``, the baselines: pure tensors in and out), ``io`` (atomic,
verified storage), ``lens`` (``collect_*``, ``fit_*``, ``InterventionSet``, ``generate``,
``save`` / ``load``: TransformerLens 4.x bridges), ``eval`` (``judge``, the jobs ``compare``,
``sweep``, ``monitor`` and ``choose_layer``, reports) and ``cli`` (the command line);
``metrics`` gathers the measurements (``tlo.metrics.judge``, ``kl_divergence``, ...).
``fit_ot_ablation`` fits ``RECOMMENDED_MAP`` (the gated Ledoit-Wolf map) unless given
``spec=PLAIN_MAP``. See the README for a quickstart.
"""

from . import metrics
from .core.baselines import ActAdd, DirectionAblation, PerNeuronOT
from .core.distributed import all_reduce_stats
from .core.ot_map import GaussianOTMap, MeanShift, OTDiagnostics
from .core.pca import PCABasis
from .core.stats import GaussianStats
from .eval.api import choose_layer, compare, monitor, sweep
from .eval.judge import judge
from .eval.prompt_sets import EvalPrompts, JobPrompts, ValidationPrompts
from .eval.selection import select_layers
from .lens.chat_template import format_chat, post_instruction_length
from .lens.collect import CollectOptions, collect_activations, collect_stats
from .lens.fit import fit_actadd, fit_direction_ablation, fit_ot_ablation
from .lens.generation import GenerationOptions, generate
from .lens.hooks import as_hook, fwd_hooks
from .lens.intervention_set import InterventionSet
from .lens.map_spec import PLAIN_MAP, RECOMMENDED_MAP, MapSpec, Placement
from .lens.models import load_model
from .lens.monitor import ActivationMonitor, MonitorSpec
from .lens.prompts import default_prompts, load_prompts
from .lens.saving import load, save
from .lens.training import collect_every_layer

__version__ = "0.1.0"

__all__ = [
    "PLAIN_MAP",
    "RECOMMENDED_MAP",
    "ActAdd",
    "ActivationMonitor",
    "CollectOptions",
    "DirectionAblation",
    "EvalPrompts",
    "GaussianOTMap",
    "GaussianStats",
    "GenerationOptions",
    "InterventionSet",
    "JobPrompts",
    "MapSpec",
    "MeanShift",
    "MonitorSpec",
    "OTDiagnostics",
    "PCABasis",
    "PerNeuronOT",
    "Placement",
    "ValidationPrompts",
    "__version__",
    "all_reduce_stats",
    "as_hook",
    "choose_layer",
    "collect_activations",
    "collect_every_layer",
    "collect_stats",
    "compare",
    "default_prompts",
    "fit_actadd",
    "fit_direction_ablation",
    "fit_ot_ablation",
    "format_chat",
    "fwd_hooks",
    "generate",
    "judge",
    "load",
    "load_model",
    "load_prompts",
    "metrics",
    "monitor",
    "post_instruction_length",
    "save",
    "select_layers",
    "sweep",
]
