#!/usr/bin/env bash
# Train and ship the whole zoo on a machine with one or more CUDA GPUs, several recipes per GPU
# at once (small models leave an H100 underused when run alone).
# usage: bench/train_zoo.sh DATA_DIR OUT_DIR [EPOCHS]   (EPOCHS overrides the recipes, for smoke runs)
set -euo pipefail
data=$1; out=$2; epochs=${3:-}
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/ltpa-inductor}
ngpu=$(python3 -c "import torch; print(max(1, torch.cuda.device_count()))")
# Two groups balanced by cost: each group gets one GPU (or they share one).
groups=("vgg_att3_concat_pc,vgg,vgg_gap,resnet_att2_concat_pc" "vgg_att3_concat_dp,resnet_att2_concat_dp")
pids=()
for g in 0 1; do
  gpu=$(( g % ngpu ))
  IFS=, read -ra ids <<< "${groups[$g]}"
  for id in "${ids[@]}"; do
    extra=(); [ -n "$epochs" ] && extra=(--epochs "$epochs")
    python3 -m ltpa train-zoo --ids "$id" --data "$data" --runs "$out/runs" --zoo "$out/zoo" \
      --device "cuda:$gpu" "${extra[@]}" > "$out/train_$id.log" 2>&1 &
    pids+=($!)
  done
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
