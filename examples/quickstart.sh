#!/usr/bin/env bash
# boottrace's main job on a real kernel: build the tiny-fp test kernel (cached),
# boot and sample it from its first instruction, then show where the time went.
#   examples/quickstart.sh [OUTDIR]     (default: ./quickstart)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-quickstart}
mkdir -p "$out"
dir=$(kernel/build.sh tiny-fp | tail -n 1)
cargo build --release -q
bt=target/release/boottrace
"$bt" record "$dir/bzImage" --initrd "$dir/initramfs.cpio" -F 1000 -q -o "$out/boottrace.data"
"$bt" flame -i "$out/boottrace.data" --vmlinux "$dir/vmlinux" "$out/flame.svg"
"$bt" report -i "$out/boottrace.data" --vmlinux "$dir/vmlinux"
echo "quickstart: flamegraph in $out/flame.svg, trace in $out/boottrace.data"
