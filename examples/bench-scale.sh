#!/usr/bin/env bash
# report, flame and diff on synthetic 1 M-sample traces (release build):
# wall time, CPU time and peak RSS of each (/usr/bin/time -v). Goal: < 2 s,
# < 1 GiB each.
#   examples/bench-scale.sh [SAMPLES]
# BOOTTRACE_BIN: another build (e.g. main's) run on the same traces right
#   after this one, command by command, with the ratios of the two; on a
#   shared host only such side-by-side figures compare.
# REPEAT=N: each command N times per build, the fastest kept (default 1).
# STAGES=1: also time each stage (read, symbols, build, analysis, render)
#   with examples/scale-stages.rs.
# KEEP=1: keep the traces and outputs (their directory is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
repeat=${REPEAT:-1}
cargo build --release -q
cargo build --release -q --example synth-trace --example scale-stages
target=${CARGO_TARGET_DIR:-$PWD/target}
bt=$target/release/boottrace
other=${BOOTTRACE_BIN:-}
gen=$target/release/examples/synth-trace
out=$(mktemp -d)
[ "${KEEP:-}" = 1 ] || trap 'rm -rf "$out"' EXIT
"$gen" "$out/a.data" "$n" 9 >/dev/null
"$gen" "$out/b.data" "$n" 10 >/dev/null
# measure LABEL BIN ARGS...: the fastest of $repeat runs as "wall cpu rss_kib"
# in $out/LABEL.best; the output in $out/LABEL.out.
measure() {
    local label=$1 bin=$2; shift 2
    local i
    : > "$out/$label.runs"
    for i in $(seq 1 "$repeat"); do
        if ! /usr/bin/time -f "%e %U %S %M" -o "$out/$label.time" \
            "$bin" "$@" > "$out/$label.out" 2> "$out/$label.err"; then
            echo "$label: FAILED, see $out/$label.err" >&2
            return 1
        fi
        cat "$out/$label.time" >> "$out/$label.runs"
    done
    sort -n "$out/$label.runs" | head -n 1 | awk '{ print $1, $2 + $3, $4 }' > "$out/$label.best"
}
row() {
    local label=$1
    read -r wall cpu rss < "$out/$label.best"
    awk -v l="$label" -v w="$wall" -v c="$cpu" -v r="$rss" \
        'BEGIN { printf "%-14s %6.2f s wall %6.2f s CPU %7.1f MiB peak RSS\n", l, w, c, r / 1024 }'
}
echo "$n samples per trace ($(stat -c %s "$out/a.data") bytes); load: $(cut -d' ' -f1-3 /proc/loadavg)"
for cmd in report flame diff; do
    for side in this other; do
        bin=$bt
        if [ "$side" = other ]; then
            [ -n "$other" ] || continue
            bin=$other
        fi
        case $cmd in
        report) measure "$cmd.$side" "$bin" report -i "$out/a.data" --system-map "$out/a.data.map" ;;
        flame) measure "$cmd.$side" "$bin" flame "$out/flame.$side.svg" -i "$out/a.data" \
            --system-map "$out/a.data.map" ;;
        diff) measure "$cmd.$side" "$bin" diff "$out/a.data" "$out/b.data" -o "$out/diff.$side.svg" \
            --system-map-a "$out/a.data.map" --system-map-b "$out/b.data.map" ;;
        esac
    done
    if [ -n "$other" ]; then
        read -r w1 c1 r1 < "$out/$cmd.this.best"
        read -r w2 c2 r2 < "$out/$cmd.other.best"
        row "$cmd.other"
        row "$cmd.this"
        same=same
        cmp -s "$out/$cmd.this.out" "$out/$cmd.other.out" || same=DIFFERENT
        if [ "$cmd" != report ]; then
            cmp -s "$out/$cmd.this.svg" "$out/$cmd.other.svg" || same=DIFFERENT
        fi
        awk -v c="$cmd" -v w1="$w1" -v w2="$w2" -v c1="$c1" -v c2="$c2" -v r1="$r1" -v r2="$r2" \
            -v same="$same" 'BEGIN { printf "%-14s %6.2fx wall %6.2fx CPU %6.2fx RSS (other/this); output %s\n",
                c ":", w2 / w1, c2 / c1, r2 / r1, same }'
        echo
    else
        row "$cmd.this"
    fi
done
if [ "${STAGES:-}" = 1 ]; then
    echo "stages (this build):"
    "$target/release/examples/scale-stages" "$out/a.data" "$out/a.data.map" "$out/b.data" "$out/b.data.map"
fi
[ "${KEEP:-}" = 1 ] && echo "(traces and outputs in $out)"
exit 0
