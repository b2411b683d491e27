"""The TransformerLens layer: the only code that touches a model.

One job per module. Models: loading (``models``) and the embedded models' checked cache
(``model_cache``). Prompts: the shipped and user prompt sets (``prompts``), chat formatting and
the post-instruction span (``chat_template``), control tokens in user text
(``control_tokens``), left-padded tokenisation (``tokens``). Activations: collection
(``collect``) and the training pass shared by many fits (``training``). Interventions: hooks
(``hooks``) and the same hooks on plain ``transformers`` models (``hf_hooks``), the fit options
(``map_spec``), fitting on a model (``fit``), model-level sets (``intervention_set``) and their
save/load (``saving``), generation (``generation``). The activation monitor that flags
tampered passes (``monitor``), what its hooks record (``monitor_log``) and where a hook point
sits along the stream (``hook_order``). Tiny offline chat models of every common family
(``testing``).
Imports ``core``; never ``eval`` or the CLI.

Glossary (one meaning per word, package-wide):

- *hook point* / *hook name*: a TransformerLens ``HookPoint`` and its name,
  ``blocks.{l}.hook_resid_pre``; ``hook=`` arguments take ``"resid_pre"``, ``"resid_mid"``,
  ``"resid_post"`` (or a full name). A *hook* is the function ``fn(tensor, *, hook)`` placed there;
  ``fwd_hooks`` are ``(hook_name, hook)`` pairs.
- *positions*: which sequence positions an operation uses. When fitting (``FitPositions``):
  ``"post_instruction"``, ``"last"`` or ``"all"`` = every real token but the first (the
  attention sink). When applying (``PositionSpec``): the same names, where ``"all"`` includes the
  first position, or a ``slice``. ``apply_positions_for`` turns the first into the second.
"""
