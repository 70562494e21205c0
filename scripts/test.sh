#!/usr/bin/env bash
# The whole test suite: unit tests of the library and cli-tests that drive the real binary.
# Installs and builds first (scripts/setup.sh), so it works on a fresh clone.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
source scripts/env.sh
cargo test --release --no-fail-fast 2>&1
