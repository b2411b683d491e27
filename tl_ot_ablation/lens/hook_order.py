"""Where a residual hook point sits along the stream, to tell whether a reader sees an edit.

A hook sees the residual stream as the hooks registered before it left it, so a reader (the
activation monitor) at a point that comes before every intervention hook cannot see the edit.
``stream_position`` orders the residual hook points, aliases and native names alike:
``blocks.l.hook_resid_pre`` (``hook_in``) < ``hook_resid_mid`` (``ln2.hook_in``) <
``hook_resid_post`` (``hook_out``) < ``blocks.{l+1}.hook_resid_pre``.
"""

import re
from collections.abc import Iterable

# Where a residual hook point sits along the stream: (layer, stage), aliases and native names.
_STREAM = re.compile(
    r"^blocks\.(\d+)\.(hook_resid_pre|hook_in|hook_resid_mid|ln2\.hook_in|hook_resid_post|hook_out)$"
)
_STAGE = {
    "hook_resid_pre": 0, "hook_in": 0, "hook_resid_mid": 1, "ln2.hook_in": 1,
    "hook_resid_post": 2, "hook_out": 2,
}  # fmt: skip


def stream_position(name: str) -> tuple[int, int] | None:
    """``(layer, stage)`` of a residual hook point (stage 0/1/2: pre/mid/post), else ``None``."""
    match = _STREAM.match(name)
    return (int(match.group(1)), _STAGE[match.group(2)]) if match else None


def first_position(hook_names: Iterable[str]) -> tuple[int, int] | None:
    """The earliest ``stream_position`` among ``hook_names`` (``None`` if none is residual)."""
    positions = [p for p in (stream_position(name) for name in hook_names) if p is not None]
    return min(positions) if positions else None
