#!/usr/bin/env bash
# KVM_CREATE_VM, which the seed saw take "randomly 20-40 ms": 30 runs that
# stop before the guest's first instruction (--until first-instruction), so
# only the VMM's start-up runs. Prints min/median/p90/max of create_vm and
# of the whole start-up (process or run start -> first instruction).
#   examples/seed/create-vm.sh
source "$(dirname "$0")/lib.sh"
trace=$work/create-vm.data
rm -f "$trace"
echo "+ boottrace record $fp/bzImage --initrd $fp/initramfs.cpio --until first-instruction --runs ${RUNS:-30} -F 0" >&2
"$bt" record "$fp/bzImage" --initrd "$fp/initramfs.cpio" --until first-instruction \
    --runs "${RUNS:-30}" -F 0 -q -o "$trace"
"$bt" report --json -i "$trace" > "$gallery/create-vm.json"
python3 - "$gallery/create-vm.json" "$HOST_NOTE" <<'PY' | tee "$gallery/create-vm.txt"
import json, sys
doc = json.load(open(sys.argv[1]))
def dist(name, vals):
    v = sorted(vals)
    n = len(v)
    if n == 0:
        sys.exit(f"no {name} in the report")
    pick = lambda q: v[min(n - 1, int(q * n))]
    med = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    print(f"  {name:<34} n={n:<3} min {v[0]/1e6:7.3f} ms  median {med/1e6:7.3f} ms  "
          f"p90 {pick(0.9)/1e6:7.3f} ms  max {v[-1]/1e6:7.3f} ms")
runs = doc["runs"]
bad = [r["run"] for r in runs if r["end_reason"] != "first-instruction"]
if bad:
    sys.exit(f"runs {bad} did not stop at the first instruction")
def phase(r, name, key):
    return next((p[key] for p in r["vmm_phases"] if p["name"] == name), None)
print(f"KVM_CREATE_VM over {len(runs)} runs ({sys.argv[2]}; host times of the VMM, no guest code runs):")
dist("create_vm (KVM_CREATE_VM)", [phase(r, "create_vm", "duration_ns") for r in runs])
dist("memory (guest memory set-up)", [phase(r, "memory", "duration_ns") for r in runs])
# Run 0 counts from process start (it includes reading the kernel image).
dist("run start -> first instruction", [phase(r, "first_instruction", "at_ns") for r in runs[1:]] or
     [phase(runs[0], "first_instruction", "at_ns")])
PY
