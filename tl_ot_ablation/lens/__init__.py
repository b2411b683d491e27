"""The TransformerLens layer: the only code that touches a model.

Loading models (``models``), prompts and chat formatting (``prompts``), positions, activation
collection (``collect``), hooks (``hooks``), fitting interventions on a model (``fit``),
generation (``generation``), model-level sets of interventions (``intervention_set``) and their
save/load (``saving``), the same hooks on plain ``transformers`` models (``hf_hooks``), tiny
offline chat models of every common family (``testing``), and the activation monitor that
flags tampered passes (``monitor``).
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
