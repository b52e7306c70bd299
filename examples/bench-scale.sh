#!/usr/bin/env bash
# report, flame and diff on synthetic 1 M-sample traces (release build):
# wall time and peak RSS of each (/usr/bin/time -v). Goal: < 2 s, < 1 GiB each.
#   examples/bench-scale.sh [SAMPLES]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
cargo build --release -q
cargo build --release -q --example synth-trace
bt=$PWD/target/release/boottrace
gen=$PWD/target/release/examples/synth-trace
out=$(mktemp -d)
"$gen" "$out/a.data" "$n" 9
"$gen" "$out/b.data" "$n" 10
measure() {
    local name=$1; shift
    /usr/bin/time -v "$@" > "$out/$name.out" 2> "$out/$name.time" || {
        echo "$name: FAILED (exit $?), see $out/$name.time"; return; }
    python3 - "$name" "$out/$name.time" <<'PY'
import re, sys
name, path = sys.argv[1], sys.argv[2]
t = open(path).read()
wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", t)
secs = (int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3)))
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
print(f"{name:<8} {secs:6.2f} s  peak RSS {rss / 1024:7.1f} MiB")
PY
}
echo "$n samples per trace ($(stat -c %s "$out/a.data") bytes)"
measure report "$bt" report -i "$out/a.data" --system-map "$out/a.data.map"
measure flame "$bt" flame "$out/flame.svg" -i "$out/a.data" --system-map "$out/a.data.map"
measure diff "$bt" diff "$out/a.data" "$out/b.data" -o "$out/diff.svg" --system-map-a "$out/a.data.map" --system-map-b "$out/b.data.map"
echo "(outputs in $out)"
