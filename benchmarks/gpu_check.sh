#!/usr/bin/env bash
# The performance check on a lent GPU (H100/H200), random weights at real sizes, against the official-style reference
# loops (benchmarks/sampler_speed.py):
#   dit: DiT-S/2 and DiT-XL/2 at 256x256 (32x32x4 latents), ours in fp32+TF32, bf16, bf16 + torch.compile, stitching
#        overhead, MFU of the last path;
#   sd:  BK-SDM-Tiny -> SD v1.4 UNets at 512x512 (64x64x4 latents), 4 images, DDIM 25, w = 7.5, ours in fp32+TF32,
#        bf16, bf16 + channels-last, bf16 + CUDA graphs, stitching overhead, MFU of the last path.
# Estimated for an H100, not measured (no GPU in the session that wrote this): dit about 5 min (XL/2: 760 TFLOP a run at
# batch 32, about 4.5 s in fp32+TF32, the 18 fp32 overhead runs and compiling the DiTs dominate); sd about 3 min
# (0.49 and 0.80 TFLOP per image and forward; 4 images x (10 tiny + 15 SD steps) x 2 halves = 135 TFLOP a run; 27 runs
# of 0.5-3 s, about 2 min compiling the two UNets for CUDA graphs, six pairs of random UNets initialised on the CPU):
# about 8 min in all. Each part writes its own files (a run stopped during sd keeps dit's), and `gpu_check.sh dit` /
# `gpu_check.sh sd` runs one part alone, e.g. as two device commands when one must stay under a time limit.
#
#   here, once:   bash benchmarks/gpu_check.sh prepare   # wheels the device image lacks, into .whl/
#   on the GPU:   bash benchmarks/gpu_check.sh [dit|sd]  # both parts by default (device run, carry [".whl"]; to $OUT)
#
# The device image has torch, timm, safetensors, numpy, pyyaml; it lacks omegaconf (imported by tstitch) and what the SD
# rows import: diffusers, transformers, tokenizers, huggingface_hub and their imports. Their wheels are pinned to the
# versions in .venv, pure Python except regex and charset-normalizer (one wheel per CPython 3.11, 3.12) and tokenizers
# (abi3); antlr4-python3-runtime is an sdist only, so it is built into a wheel here.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = prepare ]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
  pins() { .venv/bin/python -c 'import sys; from importlib.metadata import version
print(*(f"{n}=={version(n)}" for n in sys.argv[1:]))' "$@"; }
  rm -rf .whl
  for py in 3.11 3.12; do  # diffusers 0.42 needs 3.11+
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
      --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d .whl \
      $(pins omegaconf diffusers transformers tokenizers huggingface_hub regex requests charset-normalizer urllib3 \
        idna certifi tqdm packaging httpx2 httpcore2 h11 anyio truststore)
  done
  python3 -m pip wheel -q --no-deps -w .whl $(pins antlr4-python3-runtime)
  ls .whl && du -sh .whl
  exit 0
fi
python3 -m pip install -q --no-index --find-links .whl --no-deps --no-compile --target /tmp/site \
  $(ls .whl | sed 's/-.*//' | sort -u)
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
out=${OUT:-benchmarks}
part=${1:-all}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
rc=0
if [ "$part" != sd ]; then
  python3 benchmarks/sampler_speed.py --device cuda --models dit-s2 dit-xl2 --paths fp32 bf16 bf16+compile \
    --batch 32 --steps 50 --repeats 3 --overhead-repeats 3 --threads 8 --out "$out/sampler_speed_gpu.json" 2>&1 \
    | tee "$out/sampler_speed_gpu.txt" || rc=1
fi
if [ "$part" != dit ]; then
  python3 benchmarks/sampler_speed.py --device cuda --models sd1 --latent 64 \
    --paths fp32 bf16 bf16+channels_last bf16+graphs --batch 4 --steps 25 --guidance 7.5 --repeats 2 \
    --overhead-repeats 2 --threads 8 \
    --out "$out/sampler_speed_sd_gpu.json" 2>&1 | tee "$out/sampler_speed_sd_gpu.txt" || rc=1
fi
exit $rc
