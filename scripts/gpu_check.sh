#!/usr/bin/env bash
# The wgpu checks and benchmarks on a real GPU, as run on a lent GPU machine (no Rust there).
#
# Prepared on the development machine (x86-64, glibc 2.36):
#   cargo build --release --features wgpu && cargo test --features ndarray,wgpu --no-run
#   mkdir -p .devcarry; strip -o .devcarry/alexvgg target/release/alexvgg
#   for t in parity wgpu_full lrn; do strip -o .devcarry/$t target/debug/deps/$t-<hash>; done
#   xz -T2 .devcarry/*        # plus the Vulkan/GL loader .debs in .gl/ (see the device tool)
# then run from the repository root with $OUT set. Writes its logs to $OUT.
set -u
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
export XDG_RUNTIME_DIR=/tmp
# the test binaries find their fixtures through the path they were built at
mkdir -p /work && ln -sfn "$PWD" /work/main
(cd .devcarry && xz -d -T0 ./*.xz && chmod +x ./*)
B=.devcarry/alexvgg
log() { echo "== $*"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
nproc
log "adapter"
timeout 120 $B bench --model alexnet --device wgpu --batch-size 1 --iters 1 --warmup 1 2>&1 | tail -3
log "tests on every backend (flex, ndarray, wgpu on the GPU)"
for t in lrn parity wgpu_full; do
  timeout 240 .devcarry/$t --test-threads 4 2>&1 | grep -E "^test |test result|panicked|skipping" | tee "$OUT/test_$t.txt"
done
log "inference benchmark with GFLOP/s"
timeout 150 $B bench --model alexnet --variant tf --device wgpu --batch-size 1,8,32,128 --iters 10 --warmup 3 2>&1 | tee -a "$OUT/bench.txt"
log "LRN"
timeout 60 $B bench-lrn --device wgpu 2>&1 | tee -a "$OUT/bench.txt"
log "alexvgg (wgpu) and PyTorch (CUDA) on the same GPU: inference, then training steps"
timeout 200 python3 scripts/peer_bench.py --binary $B --device wgpu --torch-device cuda --batch 1,8,32 --iters 10 2>&1 | tail -14 | tee -a "$OUT/bench.txt"
timeout 150 python3 scripts/peer_bench.py --binary $B --device wgpu --torch-device cuda --train --batch 16 --iters 5 --models alexnet-tf,vgg16 2>&1 | tail -5 | tee -a "$OUT/bench.txt"
