#!/usr/bin/env bash
# All GPU checks in one run, for a lent GPU machine that has torch but no recbole and no network.
# Before it, on a machine with pip access, put the missing pure-Python wheels in .whl/ (git-ignored):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#       recbole==1.2.1 colorlog==6.9.0 texttable==1.7.0
# Then run this from the repository root with OUT set to a folder for the results:
#   OUT=/tmp/out bash benchmarks/device_check.sh
# It runs the test suite (models and trainers then use CUDA, RecBole's default device when one is
# present) and the benchmark on CUDA and CPU, and writes logs and benchmark JSON under $OUT.
set -uo pipefail
: "${OUT:?set OUT to the results folder}"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
python3 -c "import torch; print(torch.__version__, torch.cuda.is_available())" >> "$OUT/gpu.txt" 2>&1
python3 -m pytest tests -q -p no:cacheprovider --ignore=tests/test_tune.py 2>&1 | tee "$OUT/tests.log" | tail -5
python3 benchmarks/benchmark.py --devices cuda cpu --batches 5 --out "$OUT/benchmark.json" 2>&1 | tee "$OUT/benchmark.log"
