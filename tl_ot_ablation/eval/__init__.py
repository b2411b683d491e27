"""Evaluation: what interventions do to a model, measured and reported.

Metrics and judges (``metrics``), model-level measurements (``evaluate``), matched-damage search
(``matched``), layer and ``k`` selection (``selection``), the job settings and presets
(``settings``), the method registry (``methods``), detection by an activation monitor
(``detect``); the jobs' shared helpers (``common``), prompts (``prompt_sets``), fitting
(``fitting``), choices on validation prompts (``choices``) and held-out evaluation
(``held_out``); the pipelines ``compare``, ``sweep`` and ``monitor_pipeline`` behind
``jobs`` (guarded by ``job_guards``) and ``api``; the typed
``results.json`` record (``record``), reports (``report``) and plots (``plots``). Imports
``core`` and ``lens``; never the CLI.
"""
