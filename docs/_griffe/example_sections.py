"""A griffe extension for the API reference: read ``Example:`` as an examples section.

The package's docstrings are Google style with an ``Example:`` heading over doctests. Griffe's
Google parser knows only the plural, ``Examples:``, and would render the singular as an
admonition whose ``>>>`` lines are plain Markdown. This renames the heading before parsing,
so the doctests render as Python code. Loaded by ``mkdocs.yml``; not part of the package.
"""

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rename ``Example:`` to ``Examples:`` in every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
