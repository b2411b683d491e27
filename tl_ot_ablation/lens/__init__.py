"""The TransformerLens layer: the only code that touches a model.

Imports ``core`` and ``io``; never ``eval`` or the CLI. One job per module:

- ``models``: load a chat model as a ``TransformerBridge``;
- ``model_cache``: the embedded models' checked cache (GGUF parts joined, copies checksummed);
- ``weights``: a hash of a model's weights, for cache keys;
- ``prompts``: the shipped prompt splits and the user's prompt files, checked;
- ``chat_template``: chat formatting and the post-instruction positions;
- ``control_tokens``: control tokens in user text, refused or allowed on purpose;
- ``tokens``: left-padded tokenisation of formatted text;
- ``collect``: residual activations read at hook points (``CollectOptions``);
- ``training``: both prompt sets read once at many hook points (``TrainingActivations``);
- ``map_spec``: how and where a map is fitted (``MapSpec``, ``RECOMMENDED_MAP``,
  ``PLAIN_MAP``, ``Placement``);
- ``fit``: fitting interventions on a model (``fit_ot_ablation``, ...);
- ``hooks``: the TransformerLens hook contract, positions included (``as_hook``);
- ``hf_hooks``: the same hooks on a plain ``transformers`` model;
- ``intervention_set``: a model-level intervention, one per hook point (``InterventionSet``);
- ``saving``: ``tlo.save`` / ``tlo.load`` for an object or a set;
- ``compatibility``: whether a saved intervention fits this model;
- ``generation``: batched generation under hooks (``GenerationOptions``);
- ``monitor``: the activation monitor on a model (``ActivationMonitor``);
- ``monitor_log``: what the monitor's hooks record (``ScoreLog``);
- ``hook_order``: where a hook point sits along the residual stream;
- ``tiny``: tiny offline chat models of every common family, for tests and demos.

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
