#!/usr/bin/env bash
# The short GPU check of issue 5: run on a machine with one CUDA GPU, from the repository root,
# after `bash scripts/setup.sh` with a CUDA build of torch. Writes results/*-cuda.json.
# Budget: about 5 minutes on an H100 (the embedded model is small; most time is loading).
set -euo pipefail
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total --format=csv
# Fit: batched torch routes on the GPU against the per-layer POT pipeline on the CPU.
$PY benchmarks/bench_fit.py --preset few-prompts --device cuda --threads 16 \
    --out benchmarks/results/fit-few-prompts-cuda.json
$PY benchmarks/bench_fit.py --preset main --device cuda --threads 16 \
    --out benchmarks/results/fit-main-cuda.json
# Hooks: generation throughput and overhead on the GPU.
$PY benchmarks/bench_hooks.py --device cuda --threads 16 --out benchmarks/results/hooks-cuda.json
# The same code on CUDA: the device-agnostic tests that take a device (their CUDA cases are
# marked gpu), and the multi-process merge.
$PY -m pytest -q -rs -m gpu tests/
$PY -m pytest -q -rs tests/core/test_distributed.py
