"""The layers on disk hold: core never imports io/lens/eval/cli (nor TransformerLens); io never
imports lens/eval/cli; lens never imports eval/cli. Checked on the source, so a lazy import
inside a function counts too."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tl_ot_ablation"
FORBIDDEN = {
    "core": ("io", "lens", "eval", "cli", "transformer_lens", "transformers"),
    "io": ("lens", "eval", "cli", "transformer_lens", "transformers"),
    "lens": ("eval", "cli"),
    "eval": ("cli",),
}
LAYERS = ("core", "io", "lens", "eval", "cli")


def imported_modules(path: Path, source: str | None = None) -> list[str]:
    """Absolute dotted names of every module ``path`` imports (relative imports resolved)."""
    package = ["tl_ot_ablation", *path.relative_to(PACKAGE).parent.parts]
    names = []
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.append(module)
            names += [f"{module}.{alias.name}" for alias in node.names]
    return names


def crosses(name: str, forbidden: str) -> bool:
    """Whether the module ``name`` is the layer (or third-party package) ``forbidden``."""
    inside = f"tl_ot_ablation.{forbidden}"
    if forbidden in LAYERS:  # a layer name may also be a stdlib module (``io``)
        return name == inside or name.startswith(inside + ".")
    return name.split(".")[0] == forbidden


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_point_down_only(layer: str) -> None:
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert files, f"no modules in tl_ot_ablation/{layer}"
    violations = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in files
        for name in imported_modules(path)
        for forbidden in FORBIDDEN[layer]
        if crosses(name, forbidden)
    ]
    assert not violations, "\n".join(violations)


def test_the_checker_sees_a_violation() -> None:
    """The check can fail: a lazy relative import up into lens, inside a function, is caught."""
    source = "def f():\n    from ..lens.fit import fit_ot_ablation\n"
    names = imported_modules(PACKAGE / "core" / "probe.py", source)
    assert "tl_ot_ablation.lens.fit" in names
    assert any(crosses(name, "lens") for name in names)
    assert not any(crosses(name, "eval") for name in names)


def test_no_flat_modules_left() -> None:
    """Only the entry points live at the top level (and ``metrics``, the public face of the
    measurements, which only re-exports ``eval``'s); everything else is in a layer, the
    command line (``cli/``) included."""
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "metrics.py"]
    layers = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert layers == sorted(LAYERS), f"packages {layers}; expected the layers {sorted(LAYERS)}"
    tree = ast.parse((PACKAGE / "metrics.py").read_text())
    defined = [
        node.__class__.__name__
        for node in tree.body
        if not isinstance(node, ast.ImportFrom | ast.Assign | ast.Expr)
    ]
    assert not defined, f"metrics.py defines code ({defined}); put it in eval/ and re-export it"
    assert all(crosses(name, "eval") for name in imported_modules(PACKAGE / "metrics.py")), (
        "metrics.py re-exports from eval only"
    )
