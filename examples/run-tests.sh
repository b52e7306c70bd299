#!/usr/bin/env bash
# The whole boottrace test suite on a fresh Debian 12 machine with Rust:
# installs what it needs (apt), builds the test kernels (cached by content
# hash under ~/.cache/boottrace), then runs format, lint, every test (real
# kernels booted under /dev/kvm), and a bounded fuzz run.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v setpriv >/dev/null || need+=(util-linux)
command -v lzop >/dev/null || need+=(lzop)
# Independent readers of DWARF and BTF for symbols/tests/typeinfo.rs.
command -v gdb >/dev/null || need+=(gdb)
command -v bpftool >/dev/null || need+=(bpftool)
command -v pahole >/dev/null || need+=(dwarves)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q
    apt-get install -y -q "${need[@]}"
fi

kernel/build.sh tiny-fp
kernel/build.sh tiny-orc
# Debian's stock cloud kernel, for the "no vmlinux" symbol tests (skipped by them when unavailable).
kernel/fetch-debian-cloud.sh || echo "run-tests: Debian cloud kernel unavailable; its tests will skip"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --release
# LZO payloads need the opt-in (GPL-2.0) decoder feature.
cargo test --release -p boottrace-symbols --features lzo --test images
# Fuzz the image, kallsyms and ORC parsers for a bounded time when the
# nightly toolchain is there (cargo-fuzz needs it).
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    symbols/fuzz/run.sh 60
else
    echo "run-tests: no nightly toolchain: fuzz targets not run (plain mutation tests ran above)"
fi
