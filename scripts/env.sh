# Sourced by the other scripts (and by developers: `source scripts/env.sh`): puts the project's
# venv first on PATH so torch-sys finds libtorch 2.13.0 inside it (LIBTORCH_USE_PYTORCH).
_sam6d_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export VIRTUAL_ENV="$_sam6d_root/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
unset _sam6d_root
