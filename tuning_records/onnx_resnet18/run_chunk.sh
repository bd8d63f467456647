#!/bin/bash
# body of one chunk, run under the lock by chunk.sh: run_chunk.sh TRIALS [extra options]
cd /work/onnx_rn18_run
T=$1; shift
echo "=== lock acquired $(date -Is)"
timeout 860 /work/wt-onnx/.venv/bin/ms-droplet tune-model resnet18.onnx --trials "$T" --out out \
    --num-trials-per-iter 12 --num-evolutionary-trials 64 --seed 0 --no-progress "$@"
echo "=== rc $? $(date -Is)"
