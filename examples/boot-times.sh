#!/usr/bin/env bash
# Boot time of each test kernel and format, unsampled (-F 0), with the time
# from process start to the first guest instruction and when the kernel-image
# analysis (run beside the boot) ended. One boot each, one after the other.
#   examples/boot-times.sh
set -euo pipefail
cd "$(dirname "$0")/.."
fp=$(kernel/build.sh tiny-fp | tail -n 1)
orc=$(kernel/build.sh tiny-orc | tail -n 1)
cargo build --release -q
bt=target/release/boottrace
out=$(mktemp -d)
failed=0
# One boot per kernel; a boot that did not reach init is reported as failed
# (with its status and log), never printed as a boot time.
run() {
    local name=$1; shift
    local st=0
    "$bt" record "$@" -F 0 -q -o "$out/$name.data" > "$out/$name.log" 2>&1 || st=$?
    if [ "$st" -ne 0 ]; then
        printf '%-22s FAILED: record exited with status %s (%s)\n' "$name" "$st" \
            "$(tail -n 1 "$out/$name.log")"
        failed=$((failed + 1))
        return 0
    fi
    python3 - "$name" "$out/$name.data" <<'PY'
import json, subprocess, sys
name, path = sys.argv[1], sys.argv[2]
rep = json.loads(subprocess.run(["target/release/boottrace", "report", "--json", "-i", path],
                                capture_output=True, text=True, check=True).stdout)
run = rep["runs"][0]
ph = {p["name"]: p["at_ns"] for p in run["vmm_phases"]}
first = ph.get("first_instruction", 0)
# Since issue 11 the kernel analysis runs beside the boot: its phase is when it
# ended, and process start -> first instruction is the VMM's set-up alone.
print(f"{name:<22} end={run['end_reason']:<6} boot={run['boot_ns']/1e9:8.2f} s  "
      f"process->first instruction={first/1e6:7.1f} ms "
      f"(kernel analysis, beside it, done at {ph.get('kernel_analysis', 0)/1e6:6.1f} ms)")
PY
}
run tiny-fp-bzImage "$fp/bzImage" --initrd "$fp/initramfs.cpio"
run tiny-fp-vmlinux "$fp/vmlinux" --initrd "$fp/initramfs.cpio"
run tiny-orc-bzImage-2cpu "$orc/bzImage" --initrd "$orc/initramfs.cpio" --cpus 2
echo "(logs and traces in $out; on a PVM host these are emulated-KVM times)"
if [ "$failed" -gt 0 ]; then
    echo "boot-times: $failed boot(s) failed" >&2
    exit 1
fi
