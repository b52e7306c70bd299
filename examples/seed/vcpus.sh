#!/usr/bin/env bash
# Boot time per vCPU added: tiny-orc (SMP) on 1, 2 and 4 vCPUs, one boot
# each, interleaved, up to the SMP bring-up's "smp: Brought up" line
# (UNTIL=user for whole boots). Where the time goes: SMP bring-up (smp_init,
# do_boot_cpu), and on more vCPUs the waits for the other CPUs
# (rcu_barrier, stop_machine), visible as idle time.
#   examples/seed/vcpus.sh
source "$(dirname "$0")/lib.sh"
seed_sweep vcpus "$orc/bzImage" --initrd "$orc/initramfs.cpio" \
    -F "$FREQ" --timeout 3600 --runs "${RUNS:-1}" --until "${UNTIL:-$UNTIL_SMP}" \
    --vary cpus=1,2,4
settings_figures vcpus
python3 - "$gallery/vcpus.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
s = doc["settings"]
for a, b in zip(s, s[1:]):
    print(f"{a['label']} -> {b['label']}: boot {(b['boot_ns']['median']-a['boot_ns']['median'])/1e6:+.1f} ms")
PY
