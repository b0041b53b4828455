#!/usr/bin/env bash
# Every check that needs a GPU, in one run (for a session that is lent one): the CUDA tests, then the
# three benchmarks on CUDA. Prints everything; nothing is written outside $OUT (if set) or /tmp.
set -u
cd "$(dirname "$0")/.."
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
python3 -m pytest -q -k "cuda" tests/                       # CUDA-only tests (they skip without a GPU)
python3 -m pytest -q -x tests/test_pruning.py tests/test_experiment.py
python3 benchmarks/bench_pruning.py --device cuda
python3 benchmarks/bench_data.py --device cuda --images 50000
python3 benchmarks/bench_train.py --device cuda --dataset cifar10 --width 64 --images 8192
python3 benchmarks/bench_train.py --device cuda --dataset mnist --width 64 --images 8192
python3 benchmarks/bench_dynamic.py --device cuda --dataset cifar10 --width 64
