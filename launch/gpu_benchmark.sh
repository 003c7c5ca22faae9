#!/usr/bin/env bash
# The accelerator numbers of the README's "Speed" section, in one run:
#   bash launch/gpu_benchmark.sh OUTDIR
# EASE at the ML-20M shape (with the NumPy float64 inv baseline) and the MSD shape, then
# R-LARM epochs with the dense and the sparse x_u W product at both shapes, each product
# in its own process so that its peak device memory is its own. Then the numerical tests
# on the accelerator (the same code as on the CPU). Every run's output is kept in
# OUTDIR/*.log; OUTDIR/all.jsonl gathers the JSON rows.
set -uo pipefail
out=${1:-bench_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
bench="python launch/benchmark.py"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python -c "import jax; print(jax.__version__, jax.devices())" | tee -a "$out/gpu.txt"
# Both device Gram methods (dense user chunks, item pairs), one row each, as they finish
# (peak device memory is the process's so far: the pairs row's includes the first's).
timeout 180 $bench --what=ease --data=ml-20m-shape --baseline --gram=device,pairs 2>&1 \
  | tee "$out/ease_ml20m.log"
timeout 150 $bench --what=ease --data=msd-shape --nobaseline --gram=device,pairs 2>&1 \
  | tee "$out/ease_msd.log"
# Most wanted first: a device call that runs out of time still returns what is written.
# The sparse product (not `auto` on GPUs) gets few steps: its per-step time is steady.
timeout 90 $bench --what=train --data=ml-20m-shape --products=dense --steps=20 2>&1 \
  | tee "$out/train_ml20m_dense.log"
timeout 120 $bench --what=train --data=msd-shape --products=dense --steps=8 2>&1 \
  | tee "$out/train_msd_dense.log"
timeout 60 $bench --what=train --data=ml-20m-shape --products=sparse --steps=3 2>&1 \
  | tee "$out/train_ml20m_sparse.log"
timeout 90 $bench --what=train --data=msd-shape --products=sparse --steps=2 2>&1 \
  | tee "$out/train_msd_sparse.log"
timeout 120 python -m pytest -q -x -p no:cacheprovider tests/test_ease.py tests/test_metrics.py \
  tests/test_adversarial.py 2>&1 | tail -5 | tee "$out/tests.txt"
# The JSON rows from the logs: a run cut by its timeout keeps the rows it printed.
grep -h '^{' "$out"/ease_*.log "$out"/train_*.log > "$out/all.jsonl"
