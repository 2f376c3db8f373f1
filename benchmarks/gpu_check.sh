#!/usr/bin/env bash
# The performance check on a lent GPU (H100/H200), one command of about 5-8 minutes, random weights at real sizes:
# our sampler (fp32+TF32, bf16, bf16 + torch.compile) against the official-style reference loop on DiT-S/2 and
# DiT-XL/2 at 256x256 (32x32x4 latents), stitching overhead, MFU of DiT-XL/2 in bf16.
#
#   here, once:   bash benchmarks/gpu_check.sh prepare   # pure-Python wheels the device image lacks, into .whl/
#   on the GPU:   bash benchmarks/gpu_check.sh           # (device run with carry [".whl"]; writes to $OUT)
#
# The device image has torch, timm, safetensors, numpy, pyyaml; it lacks omegaconf (imported by tstitch).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = prepare ]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
  python3 -m pip download -q --no-deps --only-binary=:all: -d .whl omegaconf==2.3.0
  python3 -m pip download -q --no-deps --no-binary=:none: -d .whl antlr4-python3-runtime==4.9.3 || true
  ls .whl
  exit 0
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
  2>/dev/null || python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
out=${OUT:-benchmarks}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 benchmarks/sampler_speed.py --device cuda --models dit-s2 dit-xl2 --paths fp32 bf16 bf16+compile \
  --batch 32 --steps 50 --repeats 3 --threads 8 --out "$out/sampler_speed_gpu.json" 2>&1 | tee "$out/sampler_speed_gpu.txt"
