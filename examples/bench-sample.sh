#!/usr/bin/env bash
# boottrace's own per-sample work (capture from sync regs, layout, unwind,
# task, host counters, hand-over to the trace writer) on guest memory built
# from real kernel images, no guest running (benches/sample_path.rs):
# tiny-fp (frame pointers), tiny-orc (ORC), and Debian's cloud kernel
# (ORC, kallsyms and BTF only). Goal: <= 2 us tiny, <= 5 us distro.
#   examples/bench-sample.sh [SAMPLES] [DEBIAN_SERIES]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200000}
series=${2:-6.1}
fp=$(kernel/build.sh tiny-fp | tail -n 1)
orc=$(kernel/build.sh tiny-orc | tail -n 1)
kernels=("$fp/bzImage" "$orc/bzImage")
if deb=$(kernel/fetch-debian-cloud.sh "$series" | tail -n 1); then
    kernels+=("$deb")
else
    echo "(no Debian $series cloud kernel: skipped)"
fi
cargo bench -q --bench sample_path --no-run
for k in "${kernels[@]}"; do
    cargo bench -q --bench sample_path -- "$k" "$n"
done
