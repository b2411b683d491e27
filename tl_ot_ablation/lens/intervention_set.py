"""A model-level intervention: one tensor-level intervention per hook point, as TL hooks.

``InterventionSet.fwd_hooks()`` gives ``(hook_name, fn)`` pairs for ``model.hooks(...)``,
``model.run_with_hooks(...)``, ``run_with_cache``, generation and TransformerLens's patching
utilities; sets compose by list order (``a.fwd_hooks() + b.fwd_hooks()``). Nothing stays
attached after a ``with model.hooks(...)`` block. ``attach(model)`` / ``detach()`` are the
explicit persistent route: hooks are then global state on the model, which every later forward
pass (including other people's code in the same notebook) goes through until ``detach()``.

Without TransformerLens, ``hf_hooks(hf_model)`` (a context manager) and ``attach_hf`` /
``detach_hf`` apply the same hooks to a plain ``transformers`` model (``lens.hf_hooks``), e.g.
around ``hf_model.generate(...)``.
"""

import contextlib
import hashlib
import itertools
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..core.errors import UserInputError
from ..io import atomic, serialize
from ..io.manifest import verify_manifest
from .collect import layer_of
from .compatibility import check_hook_names, mismatches
from .hf_hooks import HFHookHandles, register_hf_hooks
from .hooks import Intervention, InterventionHook, PositionSpec, as_hook, check_positions

T = TypeVar("T")
SET_KIND = "InterventionSet"
"""The ``kind`` in a saved set's ``config.json`` (a folder of saved interventions)."""
SET_KEYS = ("kind", "format_version", "positions", "n_post_instruction", "hooks", "metadata")
"""The config keys of a saved set that its checksum covers."""
MAX_POST_INSTRUCTION = 1024
"""No chat template puts anywhere near this many tokens after the user's message."""


def _positions_to_json(positions: PositionSpec) -> Any:
    if isinstance(positions, slice):
        return {"slice": [positions.start, positions.stop, positions.step]}
    return positions


def _positions_from_json(value: Any) -> PositionSpec:
    if isinstance(value, dict) and "slice" in value:
        return slice(*value["slice"])
    return value


class InterventionSet(Mapping[str, Intervention]):
    """Interventions keyed by hook name, with where along the sequence they apply.

    Attributes:
        positions: Default position spec for ``fwd_hooks`` (see ``tl_ot_ablation.hooks``).
        n_post_instruction: Length of the chat template's post-instruction span.
        metadata: What the set was fitted on (model, layers, k, reg, prompts' hash, ...).

    Example:
        >>> from tl_ot_ablation import DirectionAblation
        >>> ab = DirectionAblation(direction=torch.tensor([1.0, 0.0]))
        >>> s = InterventionSet({"blocks.0.hook_resid_pre": ab}, positions="all")
        >>> [name for name, _ in s.fwd_hooks()]
        ['blocks.0.hook_resid_pre']
    """

    def __init__(
        self,
        interventions: Mapping[str, Intervention],
        *,
        positions: PositionSpec = "post_instruction",
        n_post_instruction: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if not interventions:
            raise UserInputError("an InterventionSet needs at least one (hook_name, intervention)")
        check_positions(positions, n_post_instruction)
        self._interventions = dict(interventions)
        self.positions = positions
        self.n_post_instruction = n_post_instruction
        self.metadata = dict(metadata or {})
        self._attached: Any = None
        self._attached_hf: HFHookHandles | None = None

    def __getitem__(self, hook_name: str) -> Intervention:
        return self._interventions[hook_name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._interventions)

    def __len__(self) -> int:
        return len(self._interventions)

    def __repr__(self) -> str:
        kinds = sorted({type(v).__name__ for v in self._interventions.values()})
        return (
            f"InterventionSet({len(self)} hook points, {'/'.join(kinds)}, "
            f"positions={self.positions!r}, strength={self.strength})"
        )

    @property
    def strength(self) -> float | None:
        """The common ``strength`` of the interventions (``None`` if they differ)."""
        values = {getattr(v, "strength", None) for v in self._interventions.values()}
        return values.pop() if len(values) == 1 else None

    def _per_distinct(self, fn: Callable[[Intervention], T]) -> dict[str, T]:
        """``{name: fn(intervention)}``, calling ``fn`` once per distinct intervention object
        (direction ablation shares one across all 3L hook points)."""
        done: dict[int, T] = {}
        out = {}
        for name, intervention in self._interventions.items():
            if id(intervention) not in done:
                done[id(intervention)] = fn(intervention)
            out[name] = done[id(intervention)]
        return out

    def fwd_hooks(
        self, positions: PositionSpec | None = None
    ) -> list[tuple[str, InterventionHook]]:
        """``(hook_name, fn)`` pairs, ``fn(resid, *, hook) -> resid``, for TL's hook API."""
        where = self.positions if positions is None else positions
        hooks = self._per_distinct(
            lambda intervention: as_hook(
                intervention, positions=where, n_post_instruction=self.n_post_instruction
            )
        )
        return list(hooks.items())

    def fingerprint(self) -> str | None:
        """Hex SHA-256 of what the hooks compute: every hook point's intervention
        (``TensorDataclass.fingerprint``), the positions and the post-instruction span; equal
        sets give equal fingerprints (the key under which a job reuses their outputs).
        ``None`` when an intervention is a plain callable, which has no such summary."""
        if not all(hasattr(v, "fingerprint") for v in self._interventions.values()):
            return None
        digest = hashlib.sha256(repr((self.positions, self.n_post_instruction)).encode())
        prints = self._per_distinct(lambda intervention: intervention.fingerprint())  # type: ignore[attr-defined]
        for name in sorted(prints):
            digest.update(f"{name}={prints[name]};".encode())
        return digest.hexdigest()

    def with_strength(self, strength: float) -> "InterventionSet":
        """Copy with every intervention at ``strength`` (0: identity)."""
        return self._replace(self._per_distinct(lambda i: i.with_strength(strength)))  # type: ignore[attr-defined]

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> "InterventionSet":
        """Copy with every intervention moved to ``device`` / cast to ``dtype``."""
        return self._replace(self._per_distinct(lambda i: i.to(device, dtype)))  # type: ignore[attr-defined]

    def _replace(self, interventions: Mapping[str, Intervention]) -> "InterventionSet":
        return InterventionSet(
            interventions,
            positions=self.positions,
            n_post_instruction=self.n_post_instruction,
            metadata=self.metadata,
        )

    def attach(self, model: Any, *, allow_mismatch: bool = False) -> "InterventionSet":
        """Keep the hooks on ``model`` until ``detach()``: GLOBAL state (see the module doc).
        The set is checked against the model first (``check_model``)."""
        if self._attached is not None:
            raise RuntimeError("this InterventionSet is already attached; call detach() first")
        self.check_model(model, allow_mismatch=allow_mismatch)
        context = model.hooks(fwd_hooks=self.fwd_hooks())
        context.__enter__()
        self._attached = context
        warnings.warn(
            "InterventionSet.attach: the hooks now run on every forward pass of this model "
            "until .detach(); prefer `with model.hooks(fwd_hooks=s.fwd_hooks()):`",
            stacklevel=2,
        )
        return self

    def detach(self) -> None:
        """Remove the hooks ``attach`` added (and only those)."""
        if self._attached is None:
            raise RuntimeError("this InterventionSet is not attached")
        context, self._attached = self._attached, None
        context.__exit__(None, None, None)

    @contextlib.contextmanager
    def hf_hooks(self, hf_model: Any, positions: PositionSpec | None = None) -> Iterator[Any]:
        """These hooks on a plain ``transformers`` model for the ``with`` block (no
        TransformerLens needed), e.g. around ``hf_model.generate(...)``; same positions rule,
        same logits as ``fwd_hooks()`` on a bridge of the same weights."""
        self.check_hf_model(hf_model)
        handles = register_hf_hooks(hf_model, self.fwd_hooks(positions))
        try:
            yield hf_model
        finally:
            handles.remove()

    def attach_hf(self, hf_model: Any) -> "InterventionSet":
        """Keep the hooks on a plain ``transformers`` model until ``detach_hf()``: GLOBAL
        state, like ``attach``."""
        if self._attached_hf is not None:
            raise RuntimeError("this InterventionSet is already attached; call detach_hf() first")
        self.check_hf_model(hf_model)
        self._attached_hf = register_hf_hooks(hf_model, self.fwd_hooks())
        return self

    def detach_hf(self) -> None:
        """Remove the hooks ``attach_hf`` added (and only those)."""
        if self._attached_hf is None:
            raise RuntimeError("this InterventionSet is not attached to a transformers model")
        handles, self._attached_hf = self._attached_hf, None
        handles.remove()

    def check_hf_model(self, hf_model: Any) -> None:
        """``check_model`` for a plain ``transformers`` model (width from its config)."""
        config = getattr(hf_model, "config", None)
        config = getattr(config, "text_config", None) or config
        width = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
        n_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
        if width is None or n_layers is None:
            raise TypeError(
                f"expected a transformers model with a config, got {type(hf_model).__name__}"
            )
        self._check_shape(int(width), int(n_layers))

    def check_model(self, model: Any, *, allow_mismatch: bool = False) -> None:
        """Raise ``ValueError`` if these hooks do not fit ``model``.

        Always refused: an intervention of another width than ``model.cfg.d_model`` (read from
        the interventions themselves), a hook at a layer the model lacks, a hook name it does
        not have. Refused unless ``allow_mismatch`` (then a warning): a model, layer count or
        chat template other than the fit recorded (``compatibility.mismatches``), e.g. a
        post-instruction span that would reach into the user's message on this model.
        """
        self._check_shape(model.cfg.d_model, model.cfg.n_layers)
        check_hook_names(model, self)
        span = self.n_post_instruction if self.positions == "post_instruction" else None
        found = mismatches(self.metadata, model, n_post_instruction=span)
        if not found:
            return
        message = f"this InterventionSet does not fit this model: {'; '.join(found)}"
        if not allow_mismatch:
            raise UserInputError(f"{message}. Fit it on this model, or pass allow_mismatch=True")
        warnings.warn(f"WARNING: {message} (allow_mismatch=True)", stacklevel=3)

    def _check_shape(self, d_model: int, n_layers: int) -> None:
        for name, width in self._per_distinct(lambda i: getattr(i, "d_model", None)).items():
            if width is not None and width != d_model:
                raise UserInputError(
                    f"the intervention at {name} takes d_model={width}; this model has "
                    f"d_model={d_model}: it was fitted on another model"
                )
        layers = [layer for layer in map(layer_of, self) if layer is not None]
        deepest = max(layers, default=-1)
        if deepest >= n_layers:
            raise UserInputError(
                f"these interventions hook layer {deepest}; this model has only {n_layers} layers"
            )

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write to a folder, atomically: one subfolder per distinct intervention plus
        ``config.json``. A folder tl_ot_ablation wrote is replaced whole (no stale
        ``intervention_N`` survives); any other non-empty folder needs ``overwrite=True``."""
        numbers = itertools.count()
        with atomic.folder(path, overwrite=overwrite) as temp:

            def save_one(intervention: Intervention) -> str:
                sub = f"intervention_{next(numbers)}"
                (temp / sub).mkdir()
                serialize.write_object(intervention, temp / sub)
                return sub

            entries = self._per_distinct(save_one)
            serialize.write_config(
                temp,
                {
                    "kind": SET_KIND,
                    "format_version": serialize.FORMAT_VERSION,
                    "positions": _positions_to_json(self.positions),
                    "n_post_instruction": self.n_post_instruction,
                    "hooks": entries,
                    "metadata": self.metadata,
                },
                SET_KEYS,
            )
        return Path(path)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        model: Any = None,
        device: torch.device | str = "cpu",
        verify: bool = True,
        allow_mismatch: bool = False,
    ) -> "InterventionSet":
        """Read a saved set, every file verified against its manifest and checksums
        (``verify=False`` reads one an older version wrote, at your own risk); with ``model``,
        check that it fits that model (``check_model``)."""
        folder = Path(path)
        if not (folder / serialize.CONFIG_NAME).is_file():
            raise UserInputError(
                f"{folder} is not a saved InterventionSet (no {serialize.CONFIG_NAME})"
            )
        config = serialize.read_config(folder, kinds={**serialize.KINDS, SET_KIND: cls})
        if config["kind"] != SET_KIND:
            raise UserInputError(f"{folder} holds a {config['kind']!r}, not an InterventionSet")
        result = cls.from_config(folder, config, verify=verify)
        if model is not None:
            result.check_model(model, allow_mismatch=allow_mismatch)
        return serialize.to_device(result, device)

    @classmethod
    def from_config(
        cls, path: str | Path, config: Mapping[str, Any], *, verify: bool = True
    ) -> "InterventionSet":
        """Build a set on the CPU from its validated ``config.json``
        (``serialize.read_config``), checking its parts, checksums and manifest."""
        folder = Path(path)
        config_file = folder / serialize.CONFIG_NAME
        hooks = config.get("hooks")
        if not isinstance(hooks, dict) or not hooks:
            raise UserInputError(f"{config_file}: field 'hooks' must map hook names to subfolders")
        if "positions" not in config:
            raise UserInputError(f"{config_file}: field 'positions' is missing")
        for sub in set(hooks.values()):
            if not isinstance(sub, str) or "/" in sub or sub.startswith("."):
                raise UserInputError(f"{config_file}: 'hooks' names {sub!r}, not a subfolder name")
        n_post = config.get("n_post_instruction")
        if n_post is not None and not (
            isinstance(n_post, int)
            and not isinstance(n_post, bool)
            and 1 <= n_post <= MAX_POST_INSTRUCTION
        ):
            raise UserInputError(
                f"{config_file}: n_post_instruction must be an integer in 1..{MAX_POST_INSTRUCTION}"
                f" (the chat template's tokens after the user message), got {n_post!r}"
            )
        parts = {
            sub: serialize.load_part(folder / sub, verify=verify) for sub in set(hooks.values())
        }
        if verify:
            serialize.verify_config(folder, config, SET_KEYS)
            verify_manifest(folder)
        return cls(
            {name: parts[sub] for name, sub in hooks.items()},
            positions=_positions_from_json(config["positions"]),
            n_post_instruction=n_post,
            metadata=config.get("metadata", {}),
        )
