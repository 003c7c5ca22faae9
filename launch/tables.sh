#!/usr/bin/env bash
# A dataset's README tables: every model of docs/results/grids_<dataset>.json swept on
# validation NDCG@100 over its grid (models not listed keep their configs.py defaults),
# then reproduce (which reuses each sweep's best cell) + analyze. Flags after the third
# argument go to every sweep and to reproduce, e.g. a training budget:
#   bash launch/tables.sh ml-100k $ARM_JAX_TEST_DATA/ml-100k
#   bash launch/tables.sh amazon-book $ARM_JAX_TEST_DATA/amazon-book runs \
#     --max_epochs=10 --patience=3
# Real files (amazon-book, gowalla) are read as --dataset=lines; the grid file and the
# runs folder keep their own name.
set -euo pipefail
name=$1 data_dir=$2 root=${3:-runs}
shift $(($# < 3 ? $# : 3))
cd "$(dirname "$0")/.."
case $name in
  amazon-book | gowalla) dataset=lines ;;
  *) dataset=$name ;;
esac
grid=docs/results/grids_${name}.json
models=$(python -c "import json,sys; print(' '.join(json.load(open(sys.argv[1]))))" "$grid")
best=()
for model in $models; do
  python launch/sweep.py --dataset="$dataset" --data_dir="$data_dir" --model="$model" \
    --grid="$grid" --sweep_dir="$root/$name/sweep_$model" "$@"
  best+=("$root/$name/sweep_$model/best.json")
done
if [ "$dataset" = lines ]; then  # only the swept models: the ML-20M defaults are not tuned
  only=(--models="$(echo "$models" | tr ' ' ',')")
else  # the paper's five keep their defaults when the grid does not list them
  only=()
fi
python launch/reproduce.py --dataset="$dataset" --data_dir="$data_dir" \
  --workdir="$root/$name" --best="$(IFS=,; echo "${best[*]}")" ${only[@]+"${only[@]}"} "$@"
