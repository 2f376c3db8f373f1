#!/usr/bin/env bash
# Set-up on a fresh machine (idempotent): Debian packages (Fashion-MNIST for the toy zoo, SLURM and munge for the
# SLURM tests) and a virtual environment .venv with tstitch installed in editable mode. torch 2.14.1 / torchvision
# 0.29.1 are pinned: on this machine kind pip takes them from the local wheel store, so nothing multi-GB is downloaded.
set -euo pipefail
cd "$(dirname "$0")"
# slurmctld, slurmd, slurm-client and munge: the one-node cluster that tests/test_slurm.py starts on localhost
# (nothing is started here); chromium and chromium-driver: the headless browser that tests/test_demo.py drives
# (selenium; no browser download); apt runs only for what is missing
apt_pkgs=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || apt_pkgs+=(dataset-fashion-mnist)
for p in slurmctld slurmd slurm-client munge chromium chromium-driver; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || apt_pkgs+=("$p")
done
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_pkgs[@]}" >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
# (re)install when the venv lacks tstitch or pyproject.toml changed since the last install
stamp=".venv/.pyproject.sha256"
if ! .venv/bin/python -c "import tstitch, pytest" 2>/dev/null || ! sha256sum -c --status "$stamp" 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
  sha256sum pyproject.toml > "$stamp"
fi
# tests/test_ldm.py's reference, Stability's packaging of CompVis ldm (the official LDM classes): without its pins
# (pytorch-lightning 1.4, omegaconf 2.1, transformers 4.33 conflict with ours); what it imports is in the dev extra
.venv/bin/python -c "import ldm.modules.diffusionmodules.openaimodel" 2>/dev/null ||
  .venv/bin/pip install -q --disable-pip-version-check --no-deps stable-diffusion-sdkit==2.1.5
.venv/bin/python -c "import tstitch" || { echo "setup.sh: tstitch failed to install" >&2; exit 1; }
