#!/usr/bin/env bash
# The whole boottrace test suite on a fresh Debian 12 machine with Rust:
# installs what it needs (apt), builds the test kernels (cached by content
# hash under ~/.cache/boottrace), then runs format, lint, every test (real
# kernels booted under /dev/kvm), and a bounded fuzz run.
#
# What the suite requires: a usable /dev/kvm, chromium, the test kernels,
# Debian's cloud kernel (apt), binutils, and a toolchain for cargo-fuzz.
# In CI (CI=true) a missing requirement fails the run with its reason, and so
# does any test that finds one missing (BOOTTRACE_REQUIRE_ALL=1). Elsewhere a
# test that cannot run prints "SKIPPED: reason" and is counted in the summary
# at the end (BOOTTRACE_SKIP_LOG), so a skip is never silent.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
ci=${CI:-false}
[ "$ci" = true ] && export BOOTTRACE_REQUIRE_ALL=1
skiplog=$(mktemp /tmp/boottrace-skips.XXXXXX)
export BOOTTRACE_SKIP_LOG=$skiplog
t_start=$(date +%s)

# missing REASON: fatal in CI, a counted skip elsewhere.
missing() {
    if [ "$ci" = true ]; then
        echo "run-tests: FAILED requirement: $1" >&2
        exit 1
    fi
    echo "run-tests: SKIPPED: $1" >&2
    echo "run-tests.sh: $1" >> "$skiplog"
}

need=()
command -v chromium >/dev/null || need+=(chromium)
command -v setpriv >/dev/null || need+=(util-linux)
command -v lzop >/dev/null || need+=(lzop)
command -v addr2line >/dev/null || need+=(binutils)
# tap devices for the virtio-net tests.
command -v ip >/dev/null || need+=(iproute2)
# Independent readers of DWARF and BTF for symbols/tests/typeinfo.rs.
command -v gdb >/dev/null || need+=(gdb)
command -v bpftool >/dev/null || need+=(bpftool)
command -v pahole >/dev/null || need+=(dwarves)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q
    apt-get install -y -q "${need[@]}" || missing "apt-get install ${need[*]} failed"
fi
[ -r /dev/kvm ] && [ -w /dev/kvm ] || missing "/dev/kvm is missing or not read-writable: no test can boot a kernel"

kernel/build.sh tiny-fp
kernel/build.sh tiny-orc
# Debian's stock cloud kernel, for the "no vmlinux" symbol tests.
kernel/fetch-debian-cloud.sh >/dev/null || missing "Debian's cloud kernel could not be fetched (kernel/fetch-debian-cloud.sh)"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --release --no-fail-fast
# LZO payloads need the opt-in (GPL-2.0) decoder feature.
cargo test --release -p boottrace-symbols --features lzo --test images
# Fuzz the image, kallsyms and ORC parsers for a bounded time (cargo-fuzz
# needs nightly features: the nightly toolchain, or stable with
# RUSTC_BOOTSTRAP=1 where nightly cannot be installed).
symbols/fuzz/run.sh 40

skips=$(grep -c . "$skiplog" || true)
echo "run-tests: done in $(( $(date +%s) - t_start )) s; $skips skipped"
if [ "$skips" -gt 0 ]; then
    sed 's/^/run-tests:   SKIPPED /' "$skiplog"
fi
rm -f "$skiplog"
