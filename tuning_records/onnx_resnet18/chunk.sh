#!/bin/bash
# one resumable chunk of the recorded ONNX ResNet-18 tuning: bash chunk.sh TRIALS [extra tune-model options]
# (chunk 1 ran with --num-trials-per-iter 16 and was stopped by the timeout after the first round)
cd /work/onnx_rn18_run
T=$1
{ echo "=== chunk --trials $* queued $(date -Is)"; flock /work/cpu.lock ./run_chunk.sh "$@"; } >> "chunk_$T.log" 2>&1
