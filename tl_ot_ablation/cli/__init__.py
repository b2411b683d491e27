"""``tl-ot-ablation`` (also ``python -m tl_ot_ablation``): compare, sweep, fit, generate, monitor,
and read (blind reading of a compare report by people; no model).

Parse, build the job's settings (checked before the model loads), load the model, call one
library function per command (``eval.jobs``), print. With no options, ``compare`` fits every
method on the package's own 64 + 64 training prompts and evaluates it on the disjoint 32 + 32
held-out ones with the embedded default model, at matched harmless KL, and writes a report
folder. ``--quick`` selects the small preset (``Settings.preset("quick")`` in Python).

Exit codes: 0 success; 2 bad input (arguments, files, prompts, an output folder in the way);
1 a failure while running (the message says what); 130 interrupted (nothing half-written).

One job per module:

- ``parser``: the argument parser (``build_parser``); ``arg_types``: its value syntaxes;
- ``to_settings``: arguments → the job's settings (``settings_from_args``);
- ``prepare``: every check made before the model loads (``check_before_loading``);
- ``model``: the model a command runs on (``load_model_for``);
- ``commands``: the four jobs, one ``eval.jobs`` call each; ``printers``: what they print;
- ``generate`` and ``read``: the two commands that are not jobs;
- ``entry``: ``main`` and the exit-code policy.
"""

from .entry import BAD_INPUT, main
from .parser import build_parser

__all__ = ["BAD_INPUT", "build_parser", "main"]
