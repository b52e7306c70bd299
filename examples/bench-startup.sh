#!/usr/bin/env bash
# VMM start-up: 30 recordings per kernel ending before the guest's first
# instruction (--until first-instruction), each its own process; prints
# min/median/p90/max of each step from process start to the first guest
# instruction (the phase table `record` prints), and when the kernel
# analysis (off the critical path) ended. Failed runs are listed, not averaged.
#   examples/bench-startup.sh [RUNS]
# On a PVM host KVM_CREATE_VM and vCPU creation are the nested hypervisor's.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-30}
fp=$(kernel/build.sh tiny-fp | tail -n 1)
cargo build --release -q
# BOOTTRACE_BIN: another build to compare (e.g. main's), same kernels and runs.
bt=${BOOTTRACE_BIN:-$PWD/target/release/boottrace}
out=$(mktemp -d)
bench() {
    local name=$1; shift
    local i
    for i in $(seq 1 "$runs"); do
        if "$bt" record "$@" --until first-instruction -q -o "$out/$name.data" \
            > "$out/$name.$i.log" 2>&1; then
            echo ok > "$out/$name.$i.status"
        else
            echo "failed (exit $?)" > "$out/$name.$i.status"
        fi
    done
    python3 - "$name" "$out" "$runs" <<'PY'
import re, statistics, sys
name, out, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
steps = ["create_vm", "memory", "load_kernel", "vcpus", "first_instruction"]
rows, failed = {s: [] for s in steps + ["total", "kernel_analysis"]}, []
for i in range(1, runs + 1):
    status = open(f"{out}/{name}.{i}.status").read().strip()
    ph = {}
    for line in open(f"{out}/{name}.{i}.log"):
        m = re.match(r"\s+([a-z_]+)\s+(\d+\.\d+)$", line)
        if m:
            ph.setdefault(m.group(1), float(m.group(2)))
    if status != "ok" or "first_instruction" not in ph:
        failed.append(f"run {i}: {status}; see {out}/{name}.{i}.log")
        continue
    prev = 0.0
    for s in steps:
        t = ph.get(s, prev)
        rows[s].append(t - prev)
        prev = t
    rows["total"].append(ph["first_instruction"])
    if "kernel_analysis" in ph:
        rows["kernel_analysis"].append(ph["kernel_analysis"])
def q(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p * (len(v) - 1))))]
print(f"{name}: {runs - len(failed)}/{runs} runs ok (ms; each step since the previous one)")
print(f"  {'step':<34} {'min':>8} {'median':>8} {'p90':>8} {'max':>8}")
label = {"create_vm": "process start -> VM created", "memory": "guest memory",
         "load_kernel": "kernel, initrd, boot tables", "vcpus": "vCPUs created and set up",
         "first_instruction": "vCPU threads -> first instruction",
         "total": "process start -> first instruction",
         "kernel_analysis": "kernel analysis done (off path)"}
for s in steps + ["total", "kernel_analysis"]:
    v = rows[s]
    if v:
        print(f"  {label[s]:<34} {min(v):8.3f} {statistics.median(v):8.3f} {q(v, .9):8.3f} {max(v):8.3f}")
for f in failed:
    print("  FAILED " + f)
PY
}
bench tiny-fp-bzImage "$fp/bzImage" --initrd "$fp/initramfs.cpio"
bench tiny-fp-vmlinux "$fp/vmlinux" --initrd "$fp/initramfs.cpio"
echo "(logs in $out; KVM_CREATE_VM and vCPU creation on a PVM host are the nested hypervisor's)"
