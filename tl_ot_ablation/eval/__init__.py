"""Evaluation: what interventions do to a model, measured and reported.

Metrics and judges (``metrics``), model-level measurements (``evaluate``), matched-damage search
(``matched``), layer and ``k`` selection (``selection``), the job settings and presets
(``settings``), the method registry (``methods``), detection by an activation monitor
(``detect``), ``compare`` and ``sweep``, the typed
``results.json`` record (``record``), reports (``report``) and plots (``plots``). Imports
``core`` and ``lens``; never the CLI.
"""
