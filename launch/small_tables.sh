#!/usr/bin/env bash
# The README's ml-100k / ml-latest-small tables with every model: the models beyond the
# paper swept on validation NDCG@100 over docs/results/grids_<dataset>.json (the paper's
# five keep their configs.py defaults, chosen the same way), then reproduce + analyze.
#   bash launch/small_tables.sh ml-100k $ARM_JAX_TEST_DATA/ml-100k [runs]
set -euo pipefail
dataset=$1 data_dir=$2 root=${3:-runs}
cd "$(dirname "$0")/.."
grid=docs/results/grids_${dataset}.json
models=$(python -c "import json,sys; print(' '.join(json.load(open(sys.argv[1]))))" "$grid")
best=()
for model in $models; do
  python launch/sweep.py --dataset="$dataset" --data_dir="$data_dir" --model="$model" \
    --grid="$grid" --sweep_dir="$root/$dataset/sweep_$model"
  best+=("$root/$dataset/sweep_$model/best.json")
done
python launch/reproduce.py --dataset="$dataset" --data_dir="$data_dir" \
  --workdir="$root/$dataset" --best="$(IFS=,; echo "${best[*]}")"
