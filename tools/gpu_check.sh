#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run: the autocast training tests (fp16 with a
# GradScaler, bf16) and the train-step time in fp32, bf16 and fp16, packed and padded BiGRU,
# for `small` and for the 23.7 M-parameter `seed` model, and whether the data loader keeps up
# with the `seed` step (tools/bench_loader.py). Logs go to $OUT (default gpu-check/).
#
#     bash tools/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$out/gpu.txt"
"$py" -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/tests.txt"
"$py" tools/bench_train_step.py --device cuda --precision fp32 bf16 fp16 --steps 10 2>&1 | tee "$out/bench_small.txt"
"$py" tools/bench_train_step.py --device cuda --model seed --n-mels 128 --precision fp32 bf16 fp16 --steps 10 \
    --batch-seconds 240 2>&1 | tee "$out/bench_seed.txt"
# can the data loader feed the seed model's training step (fp32, then bf16), with 0 to 16 workers?
"$py" tools/bench_loader.py --model seed --device cuda --workers 0 2 4 8 16 2>&1 | tee "$out/loader.txt"
