#!/usr/bin/env bash
# One lent-GPU call comparing two source trees in neighbouring processes (the GPU hosts' speed drifts within a call,
# so only adjacent processes compare): bench/host_ab.py three times per tree, the decode-step bench at 1 x 1k and
# 64 x 1k twice per tree, alternating; then the attention host-cost bench and GPU tests of the new tree.
# old_src/ is the other tree's src (untracked, carried to the device with the working tree), made with
#   rm -rf /tmp/t old_src && mkdir /tmp/t && git archive REV src | tar -x -C /tmp/t && mv /tmp/t/src old_src
#
#   OUT=DIR scripts/gpu_ab.sh
set -u
: "${OUT:?set OUT}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name --format=csv,noheader
for i in 1 2 3; do for t in old_src src; do PYTHONPATH=$t timeout 60 python3 bench/host_ab.py --label "$t $i" 2>/dev/null; done; done | tee $OUT/ab.txt
for i in 1 2; do for t in old_src src; do PYTHONPATH=$t timeout 90 python3 bench/bench_decode_step.py --hf-compile off --cases 1x1k 64x1k --json $OUT/step_${t}_$i.json > $OUT/step_${t}_$i.txt 2>&1; echo "$t $i rc=$?"; grep -E "ours eager|graphed" $OUT/step_${t}_$i.txt | grep -v "^|"; done; done
PYTHONPATH=src timeout 60 python3 -m sagellm_backend bench --provider cuda --only "attention host cost" --report $OUT/host.md > $OUT/host.txt 2>&1; grep "^| attention" $OUT/host.md
PYTHONPATH=src timeout 230 python3 -m pytest -q -p no:cacheprovider -x tests/gpu/test_forward_fast_gpu.py tests/gpu/test_attention_fp8_gpu.py tests/gpu/test_attention_variants_gpu.py tests/gpu/test_triton_launch_gpu.py > $OUT/pytest.txt 2>&1; echo "pytest rc=$?"; tail -4 $OUT/pytest.txt
