#!/usr/bin/env bash
# Trains the shipped DAP-LED and CDASR weights, and the runs their benchmarks compare against, side by side on one
# lent GPU within a fixed wall-clock budget (train.time_limit: each run ends when its time is spent, with its
# cosine learning rate decayed by the fraction of the time used). The CPU recipes are the configs themselves.
#
#   DATA=../shared/data RUNS=runs/gpu SECONDS_EACH=400 bash scripts/train_restorers_gpu.sh
#
# DATA: a folder laid out like ../shared/data holding photos/kodak24, sr/train/T91, sr/train/BSD200 and sr/Set5.
# Sun-Hays80 is left out here because the lent machine takes at most 64 MiB of files with the code (Kodak24 and
# T91 travelled as JPEG quality 95 4:4:4 for the same reason; BSD200 is JPEG already).
# Runs (12 processes, one GPU):
#   dap-led/{synthetic,no-clip,enhance-only,deblur-only}    configs/dap-led/synthetic.yaml, batch 16
#   cdasr/{x2,x3,x4}, cdasr/{x2,x3,x4}-no-clip               configs/cdasr/xN.yaml, batch 32 of 48 px LR crops
#   cdasr-meta/{meta-x4,meta-x4-no-clip}                     after x4 / x4-no-clip, on what they wrote
# CDASR keeps its last (EMA) weights: Set5 is logged, never selected on (it is a benchmark). DAP-LED selects on the
# validation crops carved from its training photos.
#
# `... train_restorers_gpu.sh continue` then trains the four shipped networks (DAP-LED, CDASR x2/x3/x4) further,
# 4 processes side by side, each from the weights the first phase wrote (`init=`, carried as float16), with a fresh
# warm-up and cosine decay, EMA 0.995, on T91 and BSD200 only, and without validation (the upload limit again:
# Kodak24 and Set5 stayed behind). SECONDS_EACH=235 was used; INIT: the folder holding dap-led.safetensors and
# cdasr-x{2,3,4}.safetensors.
set -u
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs/gpu}
T=${SECONDS_EACH:-400}
META=${META_SECONDS:-130}
T4=$((T - META - 20))  # x4 runs leave time for the meta-training that starts from them
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p "$RUNS/logs"

if [ "${1:-}" = continue ]; then
    INIT=${INIT:-gpudata/init}
    more="train.time_limit=$T train.steps=1000000 train.eval_every=1000000 train.ckpt_every=1000000
          train.log_every=50 ema=0.995 data.train=[$DATA/sr/train/T91,$DATA/sr/train/BSD200]"
    (python3 -m clipiq train dap-led --config configs/dap-led/synthetic.yaml $more train.batch_size=16 \
        data.workers=4 "init=$INIT/dap-led.safetensors" --run-dir "$RUNS/dap-led/synthetic" \
        > "$RUNS/logs/dap-led.log" 2>&1; echo "dap-led exit $?") &
    for s in 2 3 4; do
        (python3 -m clipiq train cdasr --config "configs/cdasr/x$s.yaml" $more train.batch_size=32 \
            train.monitor=null data.patch_size=48 data.workers=3 data.val= "init=$INIT/cdasr-x$s.safetensors" \
            --run-dir "$RUNS/cdasr/x$s" > "$RUNS/logs/cdasr-x$s.log" 2>&1; echo "cdasr-x$s exit $?") &
    done
    wait
    exit 0
fi

job() {  # job NAME LIMIT ARGS...: one run in the background, its log in $RUNS/logs/NAME.log
    local name=$1 limit=$2
    shift 2
    (timeout --signal=INT $((limit + 120)) python3 -m clipiq "$@" > "$RUNS/logs/$name.log" 2>&1
     echo "$name exit $?" >> "$RUNS/logs/status.txt") &
}

dl_data="data.train=[$DATA/photos/kodak24,$DATA/sr/train/T91,$DATA/sr/train/BSD200]"
dl="--config configs/dap-led/synthetic.yaml train.time_limit=$T train.steps=1000000 train.batch_size=16
    train.eval_every=1000 train.ckpt_every=1000 train.log_every=50 data.workers=3 $dl_data"
job dap-led-synthetic "$T" train dap-led $dl --run-dir "$RUNS/dap-led/synthetic"
job dap-led-no-clip "$T" train dap-led $dl model.clip=false --run-dir "$RUNS/dap-led/no-clip"
job dap-led-enhance-only "$T" train dap-led $dl kind=lowlight loss.clip_weight=0 --run-dir "$RUNS/dap-led/enhance-only"
job dap-led-deblur-only "$T" train dap-led $dl kind=deblur loss.clip_weight=0 --run-dir "$RUNS/dap-led/deblur-only"

sr_data="data.train=[$DATA/sr/train/T91,$DATA/sr/train/BSD200] data.val=$DATA/sr/Set5"
sr="train.steps=1000000 train.batch_size=32 train.eval_every=1000 train.ckpt_every=1000 train.log_every=50
    train.monitor=null data.patch_size=48 data.workers=2 $sr_data"
for s in 2 3; do
    job "cdasr-x$s" "$T" train cdasr --config "configs/cdasr/x$s.yaml" $sr train.time_limit=$T \
        --run-dir "$RUNS/cdasr/x$s"
    job "cdasr-x$s-no-clip" "$T" train cdasr --config "configs/cdasr/x$s.yaml" $sr train.time_limit=$T \
        model.clip=false --run-dir "$RUNS/cdasr/x$s-no-clip"
done
meta="--config configs/cdasr/meta-x4.yaml train.time_limit=$META train.steps=1000000 train.eval_every=100000
      train.ckpt_every=20 train.log_every=5 $sr_data"
for v in "" "-no-clip"; do
    clip=(); [ -n "$v" ] && clip=(model.clip=false)
    (timeout --signal=INT $((T4 + 120)) python3 -m clipiq train cdasr --config configs/cdasr/x4.yaml $sr \
         train.time_limit=$T4 "${clip[@]}" --run-dir "$RUNS/cdasr/x4$v" > "$RUNS/logs/cdasr-x4$v.log" 2>&1
     echo "cdasr-x4$v exit $?" >> "$RUNS/logs/status.txt"
     timeout --signal=INT $((META + 120)) python3 -m clipiq train cdasr-meta $meta \
         "meta.source=$RUNS/cdasr/x4$v/checkpoint.safetensors" --run-dir "$RUNS/cdasr-meta/meta-x4$v" \
         > "$RUNS/logs/cdasr-meta-x4$v.log" 2>&1
     echo "cdasr-meta-x4$v exit $?" >> "$RUNS/logs/status.txt") &
done
wait
cat "$RUNS/logs/status.txt"
for f in "$RUNS"/*/*/summary.json; do
    python3 - "$f" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"{s['run_dir']}: {s['steps']} steps in {s['seconds']:.0f} s, last eval {s.get('last_eval')}")
PY
done
