"""One typed, frozen settings object per job (fit, compare, sweep, monitor), with the defaults
in one place.

Every job fits the same map by default: the fields shared by all of them (``JobSettings``) hold
the map as a ``MapSpec`` (``settings.map``, default ``JOB_MAP``: ``lens.map_spec.
RECOMMENDED_MAP`` with k = 64) and the way prompts are run as a ``CollectOptions``
(``settings.collect``), so ``run_sweep()`` from Python and ``tl-ot-ablation sweep`` measure the
same map. Presets are named sets of changes (``"default"``: none; ``"quick"``: fewer prompts,
tokens and search steps) that Python and the CLI share: ``CompareSettings.preset("quick",
seed=1)``; a preset, like ``with_changes``, also takes the map's and the collection's fields by
name (``n_components=16``).

Settings check their own values when built (``checks``), so a bad value fails before any model
loads; ``resolve(n_layers)`` / ``check_layers(n_layers)`` then check layer indices against the
model. ``to_json`` / ``from_json`` are the form the records store (and read older, flat ones).

One module per job's settings (``fit``, ``compare``, ``sweep``, ``monitor``), the shared base
(``base``) and the value checks (``checks``); this package re-exports them.
"""

from .base import JOB_COLLECT, JOB_MAP, PRESETS, JobSettings
from .checks import MAX_BLOCKS
from .compare import CompareSettings
from .fit import FitSettings
from .monitor import MONITOR_HOOKS, MONITORED, MonitorSettings
from .sweep import SweepSettings

__all__ = [
    "JOB_COLLECT",
    "JOB_MAP",
    "MAX_BLOCKS",
    "MONITORED",
    "MONITOR_HOOKS",
    "PRESETS",
    "CompareSettings",
    "FitSettings",
    "JobSettings",
    "MonitorSettings",
    "SweepSettings",
]
