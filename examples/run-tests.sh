#!/usr/bin/env bash
# The whole boottrace test suite on a fresh Debian 12 machine with Rust:
# installs what it needs (apt), builds the test kernels (cached by content
# hash under ~/.cache/boottrace), then runs format, lint, every test (real
# kernels booted under /dev/kvm), and a bounded fuzz run.
#
# What the suite requires: a usable /dev/kvm, chromium, the test kernels,
# Debian's cloud kernel (apt), binutils, and a toolchain for cargo-fuzz.
# In CI (CI=true) a requirement this script finds missing fails the run at
# once with a one-line reason; elsewhere it is reported as "SKIPPED: reason"
# and counted in the summary at the end (BOOTTRACE_SKIP_LOG), so a skip is
# never silent. A test that cannot run (no chromium, no Debian kernel, …)
# fails with its reason, in CI or not: no test skips itself.
#
# Two switches to see the requirement checks work without running the suite:
#   BOOTTRACE_CHECK_REQUIREMENTS_ONLY=1   stop once every requirement is checked
#                                         (packages, /dev/kvm, the Debian kernel,
#                                         the test kernels); exit 0 when all are met
#   BOOTTRACE_PRETEND_MISSING="chromium debian-kernel"
#                                         treat these as missing and not installable
#                                         (chromium is not looked up or installed; the
#                                         Debian kernel is fetched under a package name
#                                         apt does not have, so the real fetch fails)
# e.g. CI=true BOOTTRACE_PRETEND_MISSING=chromium BOOTTRACE_CHECK_REQUIREMENTS_ONLY=1 \
#      bash examples/run-tests.sh    # fails: "FAILED requirement: chromium ..."
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

# pretend NAME: NAME is in BOOTTRACE_PRETEND_MISSING.
pretend() {
    [[ " ${BOOTTRACE_PRETEND_MISSING:-} " == *" $1 "* ]]
}

if pretend chromium; then
    missing "chromium is not installed and cannot be (BOOTTRACE_PRETEND_MISSING): the browser tests cannot run"
fi
need=()
pretend chromium || command -v chromium >/dev/null || need+=(chromium)
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

# Debian's stock cloud kernel, for the "no vmlinux" symbol tests (before the
# test kernels: a missing requirement fails the run before minutes of builds).
debian_pkg=${BOOTTRACE_DEBIAN_PKG:-}
pretend debian-kernel && debian_pkg=linux-image-pretend-missing-cloud-amd64-unsigned
BOOTTRACE_DEBIAN_PKG=$debian_pkg kernel/fetch-debian-cloud.sh >/dev/null ||
    missing "Debian's cloud kernel could not be fetched (kernel/fetch-debian-cloud.sh)"
kernel/build.sh tiny-fp
kernel/build.sh tiny-orc

if [ "${BOOTTRACE_CHECK_REQUIREMENTS_ONLY:-}" = 1 ]; then
    skips=$(grep -c . "$skiplog" || true)
    echo "run-tests: requirements checked (BOOTTRACE_CHECK_REQUIREMENTS_ONLY=1); $skips skipped"
    sed 's/^/run-tests:   SKIPPED /' "$skiplog"
    rm -f "$skiplog"
    exit 0
fi

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
