#!/usr/bin/env bash
# The seed's biggest surprise: a static `ip=` configuration cost 20 ms of a
# 35 ms boot. tiny-fp on the seed's machine (ext4 root on virtio-blk, a
# virtio-net device with link up and no backend), with and without `ip=`,
# one boot each, interleaved, the kernel proper (--skip-decompressor: the
# decompressor has nothing to do with ip=) to the first user-mode
# instruction. VARY_NET="--vary net=off,on" adds the settings without the
# network device (4 boots).
#   examples/seed/ip-config.sh
# The sleep in ip_auto_config is wall-clock time, not CPU time: sampled
# flamegraphs show it only as idle. The wall-clock view (`flame --weight
# wall`, report's Waits) shows it with its stack: the script renders the
# wall flamegraph of the `ip=` boot (ip-config-wall.svg) and prints the
# waits under ip_auto_config in both settings (ip-config-waits.txt). Sleeps
# take real time on any host, so these figures are comparable with a
# bare-metal boot's even here, where the code around them is emulated.
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
# The wall-clock view: the boot thread's running and blocked stacks.
base_trace=$(ls "$work"/ip-config/*/boot-000.data | tail -n 2 | head -n 1)
ip_trace=$(ls "$work"/ip-config/*/boot-000.data | tail -n 1)
"$bt" flame --weight wall -i "$ip_trace" "$gallery/ip-config-wall.svg"
"$bt" report --json -i "$base_trace" > "$work/ip-config-base.json"
"$bt" report --json -i "$ip_trace" > "$work/ip-config-ip.json"
python3 - "$work/ip-config-base.json" "$work/ip-config-ip.json" "$HOST_NOTE" <<'PY' \
    | tee "$gallery/ip-config-waits.txt"
import json, sys
base, ip, note = sys.argv[1:4]
def waits(path):
    s = json.load(open(path))["summary"]
    return s.get("waited_ns", {}).get("median", 0), s.get("waits", [])
print(f"waits of the boot thread (wall-clock sleeps: real time on any host; the rest {note})")
for label, path in (("without ip=", base), ("with ip=", ip)):
    total, ws = waits(path)
    under = [w for w in ws if "ip_auto_config" in w["name"] or w.get("initcall") == "ip_auto_config"]
    sub = sum(w["time_ns"]["median"] for w in under)
    print(f"  {label}: waited {total/1e6:.1f} ms in all, {sub/1e6:.1f} ms under ip_auto_config")
    for w in under[:5]:
        print(f"    {w['time_ns']['median']/1e6:9.1f} ms  {w['state']:<9} {w['name']}")
PY
