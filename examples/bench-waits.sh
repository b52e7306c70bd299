#!/usr/bin/env bash
# Blocked-stack cost benchmark: boots the same kernel at 1 kHz with and
# without the boot task's blocked stacks (BOOTTRACE_NO_WAIT_STACKS=1 turns
# them off), interleaved round by round, and prints the sampler's cost per
# sample (kick/exit, capture, unwind + task + blocked stack + counters,
# write) and the number of wait stacks recorded. The budget (issue 9): with
# blocked stacks, at most +20 % per sample.
#   examples/bench-waits.sh [ROUNDS] [KERNEL] [-- EXTRA RECORD ARGS]
#   (default: 2 rounds, tiny-fp bzImage)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
dir=$(kernel/build.sh tiny-fp | tail -n 1)
kernel=${2:-$dir/bzImage}
shift $(( $# > 2 ? 2 : $# ))
[ "${1:-}" = "--" ] && shift
cargo build --release -q
bt=target/release/boottrace
out=$(mktemp -d)
for r in $(seq 1 "$rounds"); do
    BOOTTRACE_NO_WAIT_STACKS=1 "$bt" record "$kernel" --initrd "$dir/initramfs.cpio" -F 1000 -q "$@" \
        -o "$out/off-$r.data" > "$out/off-$r.log" 2>&1 || true
    "$bt" record "$kernel" --initrd "$dir/initramfs.cpio" -F 1000 -q "$@" \
        -o "$out/on-$r.data" > "$out/on-$r.log" 2>&1 || true
done
python3 - "$out" "$rounds" <<'PY'
import json, subprocess, sys, statistics
out, rounds = sys.argv[1], int(sys.argv[2])
rows = {}
for n in ["off", "on"]:
    parts = []
    for r in range(1, rounds + 1):
        rep = json.loads(subprocess.run(["target/release/boottrace", "report", "--json", "-i", f"{out}/{n}-{r}.data"],
                                        capture_output=True, text=True, check=True).stdout)
        run = rep["runs"][0]
        s = run["sampler"]
        k = s["samples"]
        waits = sum(w["samples"] for w in run.get("waits", []))
        parts.append((s["kick_ns"] / k / 1e3, s["capture_ns"] / k / 1e3, s["unwind_ns"] / k / 1e3,
                      s["write_ns"] / k / 1e3, s["total_ns"] / k / 1e3, k, waits))
    rows[n] = [statistics.median(p[i] for p in parts) for i in range(7)]
print("wait stacks  samples  waits(top20)  kick/exit us  capture us  unwind+task+wait us  write us  total us/sample")
for n in ["off", "on"]:
    m = rows[n]
    print(f"{n:<11} {m[5]:>8.0f} {m[6]:>13.0f} {m[0]:>13.1f} {m[1]:>11.2f} {m[2]:>20.2f} {m[3]:>9.2f} {m[4]:>16.2f}")
off, on = rows["off"], rows["on"]
print(f"per-sample cost with blocked stacks: {100 * (on[4] / off[4] - 1):+.1f} % total, "
      f"{100 * (on[2] / off[2] - 1):+.1f} % unwind step (budget: +20 % total)")
print(f"(traces in {out}; emulated-KVM times on a PVM host)")
PY
