#!/usr/bin/env bash
# Train and ship zoo recipes on a machine with one or more CUDA GPUs, several recipes per GPU at
# once (the small models leave an H100 underused when run alone).
#
# usage: bench/train_zoo.sh DATA_DIR OUT_DIR [GPU=ID[:SEED][@EPOCHS],ID...] ...
#   Each plan argument puts its recipes on one GPU, all running at once. Without plan arguments
#   the whole zoo is spread over the GPUs found. @EPOCHS overrides a recipe (smoke runs); :SEED
#   repeats it with another seed, shipped as ID_seedSEED under OUT_DIR/seeds.
#   Shipped files and cards go to OUT_DIR/zoo; the recipes trained only for the reproduction
#   table (full width, ids ending _w1, too large to ship; the ResNets at batch 128, ids ending
#   _b128) go to OUT_DIR/reproduction. Each recipe logs to OUT_DIR/train_ID.log.
#   PRECISION=int8 (environment) ships every file in that precision instead of each recipe's own.
#   VARIANT=NAME SETTINGS="KEY=VALUE ..." (environment) trains every recipe of this call changed
#   by those settings, shipped as ID_NAME under OUT_DIR/reproduction (ltpa zoo train --variant).
#   ROBUSTNESS=1 (environment) then measures the FGSM curves of every file trained, on GPU 0,
#   into OUT_DIR/robustness/{zoo,seeds,reproduction}: whichever seed ships later, `ltpa zoo
#   curves` finds its curve by sha256.
set -euo pipefail
data=$1; out=$2; shift 2
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/ltpa-inductor}
mkdir -p "$out"
plans=("$@")
if [ ${#plans[@]} -eq 0 ]; then
  ngpu=$(python3 -c "import torch; print(max(1, torch.cuda.device_count()))")
  # Each slow ResNet shares its GPU with VGGs, which fill the GPU while the ResNet waits on launches.
  groups=("resnet_att2_concat_pc,vgg_att3_concat_pc" "resnet_att2_concat_dp,vgg_att3_concat_dp"
          "resnet164,vgg,vgg_gap")
  for g in "${!groups[@]}"; do plans+=("$(( g % ngpu ))=${groups[$g]}"); done
fi
precision=(); [ -n "${PRECISION:-}" ] && precision=(--precision "$PRECISION")
variant=(); suffix=""
if [ -n "${VARIANT:-}" ]; then
  variant=(--variant "$VARIANT"); suffix="_$VARIANT"
  for setting in ${SETTINGS:-}; do variant+=(--set "$setting"); done
fi
pids=()
for plan in "${plans[@]}"; do
  gpu=${plan%%=*}
  IFS=, read -ra ids <<< "${plan#*=}"
  for spec in "${ids[@]}"; do
    id=${spec%@*}; extra=(); zoo="$out/zoo"; name=$id$suffix
    [ "$spec" != "$id" ] && extra+=(--epochs "${spec#*@}")
    if [[ $id == *:* ]]; then
      name="${id%%:*}${suffix}_seed${id#*:}"; extra+=(--seed "${id#*:}"); id=${id%%:*}
      zoo="$out/seeds"
    fi
    [[ $id == *_w1 || $id == *_b128 || -n $suffix ]] && zoo="$out/reproduction"
    python3 -m ltpa zoo train --ids "$id" --data "$data" --runs "$out/runs" --zoo "$zoo" \
      --device "cuda:$gpu" "${precision[@]}" "${extra[@]}" "${variant[@]}" \
      > "$out/train_$name.log" 2>&1 &
    pids+=($!)
    echo "started $name on cuda:$gpu (pid $!)"
  done
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
echo "all recipes finished (status $status)"
if [ -n "${ROBUSTNESS:-}" ]; then
  for folder in zoo seeds reproduction; do
    [ -d "$out/$folder/cards" ] || continue
    python3 -m ltpa zoo finalize --zoo "$out/$folder" > /dev/null
    LTPA_ZOO="$out/$folder" python3 -m ltpa robustness --data "$data" --device cuda:0 \
      --out "$out/robustness/$folder" --no-figure > "$out/robustness_$folder.log" 2>&1 || status=1
    echo "FGSM curves of $out/$folder in $out/robustness/$folder"
  done
fi
exit $status
