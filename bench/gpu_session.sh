#!/usr/bin/env bash
# The GPU figures in one go, for a machine with CUDA and without music21: the CUDA-only tests of model.py, then
# the training and generation benchmarks. Results are printed and copied to OUT_DIR/gpu.txt.
#   bash bench/gpu_session.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-.}}
export PYTHONUNBUFFERED=1
{
  date -u +"%Y-%m-%d %H:%M UTC"
  python -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name())"
  python -m pytest -q -p no:cacheprovider tests/test_model.py 2>&1 | tail -3
  python bench/bench_train.py 2>&1 | tail -6
  python bench/bench_generate.py 2>&1 | tail -7
} 2>&1 | tee "$out/gpu.txt"
