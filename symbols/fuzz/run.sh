#!/usr/bin/env bash
# Run the cargo-fuzz targets of boottrace-symbols for a bounded time.
#
#   symbols/fuzz/run.sh SECONDS [TARGET...]   # TARGET: image headers decompress kallsyms orc btf (default: all)
#
# Each target runs SECONDS (wall clock, libFuzzer's -max_total_time), seeded
# with inputs cut from the real test kernels (kernel/build.sh tiny-fp and
# tiny-orc, cached). Needs cargo-fuzz (nightly, or stable via RUSTC_BOOTSTRAP=1) (installed
# from crates.io when missing). Exit code != 0 when a target crashes; the
# crashing input is left in symbols/fuzz/artifacts/TARGET/.
set -euo pipefail

secs=${1:?usage: symbols/fuzz/run.sh SECONDS [TARGET...]}
shift
case "$secs" in *[!0-9]*|"") echo "run.sh: SECONDS must be a number" >&2; exit 2 ;; esac
here=$(cd "$(dirname "$0")" && pwd)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(image headers decompress kallsyms orc btf)

# cargo-fuzz passes nightly-only flags: use the nightly toolchain when there
# is one, else the default toolchain with RUSTC_BOOTSTRAP=1 (no toolchain can
# be downloaded on some machines; the flags -s none needs are stable ones).
if rustup toolchain list | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    echo "run.sh: no nightly toolchain: using the default one with RUSTC_BOOTSTRAP=1" >&2
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "run.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked >&2
fi

# Seeds from the real kernels, written by an ignored test of this crate.
seeds="$here/seeds"
missing=0
for t in "${targets[@]}"; do [ -d "$seeds/$t" ] || missing=1; done
if [ ! -f "$seeds/.done" ] || [ $missing = 1 ]; then
    rm -rf "$seeds"
    (cd "$here/.." && BOOTTRACE_FUZZ_SEEDS="$seeds" \
        cargo test -q --test mutations write_fuzz_seeds -- --ignored >&2)
    # Targets without seeds from the kernels (btf) start from an empty folder.
    for t in "${targets[@]}"; do mkdir -p "$seeds/$t"; done
    touch "$seeds/.done"
fi

cd "$here"
# -s none: all of this crate is safe Rust and the C decoders (liblzma, libzstd,
# libbz2) are not built with ASan anyway, so ASan would only cost speed (6x on
# the kallsyms target). -a: keep overflow checks and debug assertions, so an
# arithmetic overflow is a crash here as it is a panic in debug builds.
flags=(-O -a -s none)
"${fuzz[@]}" build "${flags[@]}" >&2
status=0
for t in "${targets[@]}"; do
    # The test kernels carry no BTF, so some targets start without seeds.
    mkdir -p "corpus/$t" "$seeds/$t"
    echo "run.sh: fuzzing $t for ${secs}s" >&2
    # Kernel-sized seeds: allow inputs up to 4 MiB; 2 GiB RSS (the decompress
    # bound is 1 GiB of output); a single input taking 30 s is a hang.
    if ! "${fuzz[@]}" run "${flags[@]}" "$t" "corpus/$t" "$seeds/$t" -- \
        -max_total_time="$secs" -max_len=4194304 -rss_limit_mb=2560 -timeout=30 \
        -print_final_stats=1 >&2; then
        echo "run.sh: $t FAILED (see symbols/fuzz/artifacts/$t/)" >&2
        status=1
    fi
done
exit $status
