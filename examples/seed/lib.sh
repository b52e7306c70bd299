# Shared by the seed's experiments (examples/seed/*.sh): sourced, not run.
# Builds boottrace, finds the test kernels, and runs sweeps whose chart,
# table, JSON and differential flamegraph are copied into flamegraphs/seed/.
# Traces stay under $BOOTTRACE_SEED_DIR (default target/seed/), not in git.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo=$(pwd)
gallery=$repo/flamegraphs/seed
work=${BOOTTRACE_SEED_DIR:-$repo/target/seed}
mkdir -p "$gallery" "$work"
cargo build --release -q
bt=${CARGO_TARGET_DIR:-$repo/target}/release/boottrace
fp=$(kernel/build.sh tiny-fp | tail -n 1)
orc=$(kernel/build.sh tiny-orc | tail -n 1)
# The static address the seed's machine configured (eth0, no DHCP).
IP_STATIC="ip=10.0.0.2::10.0.0.1:255.255.255.0::eth0:off"
# Where a partial boot stops: the kernel's "Memory: …K/…K available" line,
# printed once memory is set up (page structures initialised and freed),
# and the SMP bring-up's summary line. UNTIL=user runs whole boots.
UNTIL_MEMORY='serial:Memory: [0-9]+K/'
UNTIL_SMP='serial:smp: Brought up' 
# On a PVM host (nested KVM that emulates guest kernel code) every time is an
# emulated-KVM time and 1 kHz sampling is plenty; elsewhere boots take
# milliseconds and want the default 10 kHz.
if [ -e /sys/module/kvm_pvm ]; then
    FREQ=${BOOTTRACE_SEED_FREQ:-1000}
    HOST_NOTE="emulated-KVM times (nested PVM host)"
else
    FREQ=${BOOTTRACE_SEED_FREQ:-10000}
    HOST_NOTE="KVM times"
fi
command -v python3 > /dev/null || { echo "$0: python3 is needed to print the figures" >&2; exit 1; }

# seed_sweep NAME SWEEP-ARGS...: runs `boottrace sweep` into $work/NAME and
# copies its outputs to flamegraphs/seed/NAME{.svg,.txt,.json,-diff.svg}.
# A failed boot fails the script (set -e): nothing is averaged over it.
seed_sweep() {
    local name=$1; shift
    local dir=$work/$name
    rm -rf "$dir"
    echo "+ boottrace sweep $* --dir $dir" >&2
    "$bt" sweep "$@" --dir "$dir" > "$dir.txt"
    cp "$dir/sweep.svg" "$gallery/$name.svg"
    cp "$dir/sweep.json" "$gallery/$name.json"
    cp "$dir.txt" "$gallery/$name.txt"
    if [ -f "$dir/diff-first-last.svg" ]; then
        cp "$dir/diff-first-last.svg" "$gallery/$name-diff.svg"
    fi
    cat "$dir.txt"
}

# settings_figures NAME: one line per setting from flamegraphs/seed/NAME.json:
# boot time, host page faults, VMM memory set-up, and the kernel phase that
# took longest.
settings_figures() {
    python3 - "$gallery/$1.json" "$HOST_NOTE" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
print(f"figures ({sys.argv[2]}):")
for s in doc["settings"]:
    b, f, m = s["boot_ns"], s["faults"], s["memory_setup_ns"]
    phases = sorted(s["kernel_phases"], key=lambda p: -p[1])
    where = ", ".join(f"{n} {v/1e6:.0f} ms" for n, v in phases[:3])
    print(f"  {s['label']:<58} boot {b['median']/1e6:9.1f} ms [{b['min']/1e6:.1f}-{b['max']/1e6:.1f}]"
          f"  host faults {f['median']:8.0f}  VMM memory {m['median']/1e6 if m else 0:7.1f} ms  ({where})")
PY
}
