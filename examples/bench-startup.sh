#!/usr/bin/env bash
# VMM start-up: RUNS recordings per kernel ending before the guest's first
# instruction (--until first-instruction), each its own process; prints
# min/median/p90/max of each step from process start to the first guest
# instruction (the phase table `record` prints), the critical path split
# into boottrace's own time and the time inside KVM ioctls (the
# hypervisor's: on a PVM host most of KVM_CREATE_VM, KVM_CREATE_IRQCHIP, …),
# the median of every timed start-up step, and when the kernel analysis (off
# the critical path) ended. Failed runs are listed, not averaged.
#   examples/bench-startup.sh [RUNS]
# BOOTTRACE_BIN: the build(s) to measure, space-separated (default: this
# checkout's); with two or more, their runs alternate and the tables are
# printed one after the other, with each build's median total against the first's.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-30}
fp=$(kernel/build.sh tiny-fp | tail -n 1)
cargo build --release -q
read -r -a bins <<< "${BOOTTRACE_BIN:-$PWD/target/release/boottrace}"
out=$(mktemp -d)
bench() {
    local name=$1; shift
    local i b
    for i in $(seq 1 "$runs"); do
        for b in "${!bins[@]}"; do
            if "${bins[$b]}" record "$@" --until first-instruction -q -o "$out/$name.data" \
                > "$out/$name.$b.$i.log" 2>&1; then
                echo ok > "$out/$name.$b.$i.status"
            else
                echo "failed (exit $?)" > "$out/$name.$b.$i.status"
            fi
        done
    done
    python3 - "$name" "$out" "$runs" "${bins[@]}" <<'PY'
import collections, re, statistics, sys
name, out, runs, bins = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
steps = ["create_vm", "memory", "load_kernel", "vcpus", "first_instruction"]
label = {"create_vm": "process start -> VM created", "memory": "guest memory",
         "load_kernel": "kernel, initrd, boot tables", "vcpus": "vCPUs created and set up",
         "first_instruction": "vCPU threads -> first instruction",
         "total": "process start -> first instruction",
         "own": "  boottrace's own (critical path)",
         "kvm": "  KVM ioctls (critical path)",
         "kernel_analysis": "kernel analysis done (off path)"}
def q(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p * (len(v) - 1))))]
first_median = None
for b, binary in enumerate(bins):
    rows = {s: [] for s in steps + ["total", "own", "kvm", "kernel_analysis"]}
    took, at, failed = collections.defaultdict(list), collections.defaultdict(list), []
    for i in range(1, runs + 1):
        status = open(f"{out}/{name}.{b}.{i}.status").read().strip()
        log = open(f"{out}/{name}.{b}.{i}.log").read()
        ph = {}
        for line in log.splitlines():
            m = re.match(r"\s+([a-z_]+)\s+(\d+\.\d+)$", line)
            if m:
                ph.setdefault(m.group(1), float(m.group(2)))
        if status != "ok" or "first_instruction" not in ph:
            failed.append(f"run {i}: {status}; see {out}/{name}.{b}.{i}.log")
            continue
        prev = 0.0
        for s in steps:
            t = ph.get(s, prev)
            rows[s].append(t - prev)
            prev = t
        rows["total"].append(ph["first_instruction"])
        if "kernel_analysis" in ph:
            rows["kernel_analysis"].append(ph["kernel_analysis"])
        m = re.search(r"critical path to the first instruction: \S+ ms = boottrace's own (\S+) ms \+ KVM ioctls (\S+) ms", log)
        if m:
            rows["own"].append(float(m.group(1)))
            rows["kvm"].append(float(m.group(2)))
        for m in re.finditer(r"step (\S+)\s+(.+?)\s+at\s+(\d+\.\d+) took\s+(\d+\.\d+)", log):
            took[(m.group(1), m.group(2))].append(float(m.group(4)))
            at[(m.group(1), m.group(2))].append(float(m.group(3)))
    print(f"{name} [{binary}]: {runs - len(failed)}/{runs} runs ok (ms; each step since the previous one)")
    print(f"  {'step':<34} {'min':>8} {'median':>8} {'p90':>8} {'max':>8}")
    for s in steps + ["total", "own", "kvm", "kernel_analysis"]:
        v = rows[s]
        if v:
            print(f"  {label[s]:<34} {min(v):8.3f} {statistics.median(v):8.3f} {q(v, .9):8.3f} {max(v):8.3f}")
    if rows["total"]:
        med = statistics.median(rows["total"])
        if first_median is None:
            first_median = med
        elif first_median > 0:
            print(f"  median total: {med / first_median:.2f}x the first build's")
    if took:
        print(f"  every start-up step, median over the runs (thread, step: at, took; kvm = a KVM ioctl):")
        for k in sorted(took, key=lambda k: statistics.median(at[k])):
            print(f"    {k[0]:<9} {k[1]:<32} {statistics.median(at[k]):8.3f} {statistics.median(took[k]):8.3f}")
    for f in failed:
        print("  FAILED " + f)
PY
}
bench tiny-fp-bzImage "$fp/bzImage" --initrd "$fp/initramfs.cpio"
bench tiny-fp-vmlinux "$fp/vmlinux" --initrd "$fp/initramfs.cpio"
# Before the phase table's clock starts (main()): exec, dynamic loading, the
# Rust runtime; `boottrace --version` against /bin/true bounds it.
python3 - "${bins[0]}" "$runs" <<'PY'
import statistics, subprocess, sys, time
def wall(argv):
    ts = []
    for _ in range(int(sys.argv[2])):
        t = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, check=False)
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)
print(f"before main(), not in the tables: `boottrace --version` runs {wall([sys.argv[1], '--version']):.2f} ms, /bin/true {wall(['/bin/true']):.2f} ms (median wall time, fork to exit)")
PY
echo "(logs in $out; KVM_CREATE_VM and vCPU creation on a PVM host are the nested hypervisor's)"
