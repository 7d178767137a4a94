#!/usr/bin/env bash
# The digits n-sweep on one GPU (reference_models/README.md, "GPU path"): Adam and the paper's SGD
# (momentum 0.95), n = 64 ... 1024, three seeds, the digits setting of reference_models.ddpm.sweep
# (U-Net W = 16, mults (1, 2), dropout 0.1, batch 16, 150 n steps, 20 checkpoints, 500 DDIM-50
# samples). One training process per (optimizer, n) stacks that n's seeds (vmap over stacked
# weights); the ten processes share the GPU (each is bound by Python's launch overhead, not by the
# GPU). Training is time-boxed by TRAIN_S; every run resumes, so rerunning this script continues
# where the time box stopped it, then samples (on the GPU), tracks and analyses again.
#
#   bash reference_models/ddpm/gpu_sweep.sh            # OUT=runs/gpu-digits TRAIN_S=420
set -uo pipefail
PY=${PY:-python}
OUT=${OUT:-runs/gpu-digits}
NS=${NS:-"64 128 256 512 1024"}
SEEDS=${SEEDS:-"0 1 2"}
TRAIN_S=${TRAIN_S:-420}      # wall-clock box for training (seconds)
DEVICE=${DEVICE:-cuda}
TRACK_JOBS=${TRACK_JOBS:-7}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1
common=(--setting digits --seeds $SEEDS --device "$DEVICE")
declare -A opt_args=([adam]="--optimizer adam" [sgd]="--optimizer sgd --lr 0.01")

$PY -m reference_models.ddpm.batched "${common[@]}" --n 1024 --time-steps 1 3 5 --time-n-steps 30 \
    | tee "$OUT/step_times.txt"
for opt in adam sgd; do
  for n in $NS; do
    timeout "$TRAIN_S" $PY -m reference_models.ddpm.batched "${common[@]}" ${opt_args[$opt]} \
        --out "$OUT/$opt" --n "$n" --train-only > "$OUT/train-$opt-n$n.log" 2>&1 &
  done
done
wait
for opt in adam sgd; do  # sample on the GPU, track on the CPUs, analyse (sweep.json, sweep.md)
  $PY -m reference_models.ddpm.batched "${common[@]}" ${opt_args[$opt]} --out "$OUT/$opt" --n $NS \
      --no-train --track-jobs "$TRACK_JOBS" --n-bootstrap 200 > "$OUT/analyse-$opt.log" 2>&1 &
done
wait
tail -n 40 "$OUT"/adam/sweep.md "$OUT"/sgd/sweep.md
grep -h "step " "$OUT"/train-*-n1024.log | tail -n 2
