"""Evaluation: what interventions do to a model, measured and reported.

Imports ``core``, ``io`` and ``lens``; never the CLI. One job per module:

- measurements: ``metrics`` (refusal, KL, degeneracy, bootstrap CIs), ``judge`` (the compliance
  judge) and ``hf_judges`` (the field's judges from the hub), ``evaluate`` (next-token
  distributions, perplexity), ``capability`` (multiple-choice accuracy), ``damage`` (harmless
  damage as a distribution), ``xstest`` (over-refusal), ``detect`` (how well a monitor detects
  an edit), ``gate_report`` (where a gate opens on real traffic);
- choices: ``matched`` (the strength at a damage budget), ``strength`` (a strength chosen on
  validation prompts), ``selection`` (``k``, estimator and layer from training data),
  ``methods`` (the method registry);
- jobs: ``settings`` (one frozen settings object per job), ``prompt_sets`` (training,
  validation and held-out splits), ``common`` (what several jobs share), ``fitting`` (every
  method from one pass), ``choices`` (compare's layer and strengths), ``held_out`` (one method
  on the held-out prompts), ``validation`` (each validation measurement made once),
  ``run_cache`` with ``result_entry`` (compare's outputs kept on disk between runs),
  ``compare``, ``sweep`` with ``sweep_scorer``, ``monitor_pipeline``, ``job_guards`` (what
  every job checks first), ``jobs`` (one function per CLI command), ``api`` (the jobs from a
  notebook);
- records and reports: ``record`` (the typed ``results.json`` / ``sweep.json`` /
  ``detect.json``), ``record_codec`` (their one JSON codec), ``verdict`` (the verdict
  policy), ``report_markdown``, ``report_sections`` and ``report_pages`` (markdown), ``report``
  (report folders), ``plots`` and ``plots_sweep`` (figures);
- people reading: ``reading`` (blind export), ``reading_score`` (scoring the readings).
"""
