#!/usr/bin/env bash
# The accelerator numbers of the README's "Speed" section, in one run:
#   bash launch/gpu_benchmark.sh OUTDIR
# R-LARM epochs with the dense and the gather–scatter ("segment") x_u W product at the
# ML-20M and MSD shapes, each in its own process so that its peak device memory is its
# own; EASE at both shapes; the sequential sparse product at the ML-20M shape; the
# numerical tests on the accelerator (the same code as on the CPU); then the NumPy
# float64 inv baseline of EASE at the ML-20M shape. Every run's output is kept in
# OUTDIR/*.log; OUTDIR/all.jsonl gathers the JSON rows.
set -uo pipefail
out=${1:-bench_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
bench="python launch/benchmark.py"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python -c "import jax; print(jax.__version__, jax.devices())" | tee -a "$out/gpu.txt"
# Most wanted first: a device call that runs out of time still returns what is written.
# R-LARM epochs: the dense product (`auto` on GPUs) and the gather–scatter one, at the
# ML-20M shape with the step's parts timed alone (--parts: forward product, rank loss,
# Adam), then the sequential sparse loop at the ML-20M shape only (few steps: its
# per-step time is steady; the MSD shape took 14.0 s a step on an H200).
timeout 120 $bench --what=train --data=ml-20m-shape --products=dense --steps=20 --parts 2>&1 \
  | tee "$out/train_ml20m_dense.log"
timeout 120 $bench --what=train --data=ml-20m-shape --products=segment --steps=20 --parts 2>&1 \
  | tee "$out/train_ml20m_segment.log"
timeout 120 $bench --what=train --data=msd-shape --products=dense --steps=8 2>&1 \
  | tee "$out/train_msd_dense.log"
timeout 120 $bench --what=train --data=msd-shape --products=segment --steps=8 2>&1 \
  | tee "$out/train_msd_segment.log"
# Both device Gram methods (dense user chunks, item pairs), one row each, as they finish
# (peak device memory is the process's so far: the pairs row's includes the first's).
timeout 90 $bench --what=ease --data=ml-20m-shape --nobaseline --gram=device,pairs 2>&1 \
  | tee "$out/ease_ml20m.log"
timeout 100 $bench --what=ease --data=msd-shape --nobaseline --gram=device,pairs 2>&1 \
  | tee "$out/ease_msd.log"
timeout 60 $bench --what=train --data=ml-20m-shape --products=sparse --steps=3 2>&1 \
  | tee "$out/train_ml20m_sparse.log"
timeout 120 python -m pytest -q -x -p no:cacheprovider tests/test_ease.py tests/test_metrics.py \
  tests/test_adversarial.py 2>&1 | tail -5 | tee "$out/tests.txt"
# Last, the slowest and least wanted: the NumPy float64 baseline on the host's CPUs
# (82.4 s at the ML-20M shape on an H200 machine's 16 cores).
timeout 150 $bench --what=ease --data=ml-20m-shape --baseline --gram=pairs 2>&1 \
  | tee "$out/ease_ml20m_baseline.log"
# The JSON rows from the logs: a run cut by its timeout keeps the rows it printed.
grep -h '^{' "$out"/ease_*.log "$out"/train_*.log > "$out/all.jsonl"
