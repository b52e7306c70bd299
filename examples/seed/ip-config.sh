#!/usr/bin/env bash
# The seed's biggest surprise: a static `ip=` configuration cost 20 ms of a
# 35 ms boot. tiny-fp on the seed's machine (ext4 root on virtio-blk, a
# virtio-net device with link up and no backend), with and without `ip=`,
# one boot each, interleaved, the kernel proper (--skip-decompressor: the
# decompressor has nothing to do with ip=) to the first user-mode
# instruction. VARY_NET="--vary net=off,on" adds the settings without the
# network device (4 boots).
#   examples/seed/ip-config.sh
# Until the wall-clock view lands, the sleep in ip_auto_config shows as idle
# time (the table's "phase idle" row and the chart's third panel) and in the
# differential flamegraph. When `flame --weight wall` / report `Waits` exist,
# add here: "$bt" flame --weight wall -i "$work"/ip-config/02-*/boot-000.data
# to see the wait with its stack.
source "$(dirname "$0")/lib.sh"
disk=$work/ip-config-rootfs.ext4
cp "$fp/rootfs.ext4" "$disk"
# shellcheck disable=SC2086 # VARY_NET is a list of words
seed_sweep ip-config "$fp/bzImage" --skip-decompressor --disk "$disk" --root /dev/vda --net \
    -F "$FREQ" --timeout 3600 --runs "${RUNS:-1}" --until "${UNTIL:-user}" \
    ${VARY_NET:-} --vary "cmdline=|$IP_STATIC"
settings_figures ip-config
python3 - "$gallery/ip-config.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
idle = {s["label"]: dict(s["kernel_phases"]).get("idle", 0) for s in doc["settings"]}
boot = {s["label"]: s["boot_ns"]["median"] for s in doc["settings"]}
labels = [s["label"] for s in doc["settings"]]
base, ip = labels[-2], labels[-1]  # with the device: without and with ip=
print(f"ip= with a virtio-net device: boot {boot[base]/1e6:.1f} -> {boot[ip]/1e6:.1f} ms "
      f"({(boot[ip]-boot[base])/1e6:+.1f} ms), idle {idle[base]/1e6:.1f} -> {idle[ip]/1e6:.1f} ms")
for r in doc["grew"][:3]:
    print(f"  grew: {r['name']} {r['change_ms']:+.1f} ms per boot")
PY
