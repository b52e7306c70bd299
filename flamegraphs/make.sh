#!/usr/bin/env bash
# Rebuild the whole gallery from the current commit:
#
#   flamegraphs/make.sh [DATA_DIR]
#
# Builds boottrace (release), the test kernels and fetches Debian's cloud
# kernel (pinned: BOOTTRACE_DEBIAN_PKG, default below), records every boot
# one after the other (traces go to DATA_DIR, default a new temporary
# directory, never into the repository), renders every file of the gallery,
# and writes flamegraphs/README.md from what the commands printed (the
# figures come from `report --json`, so the README cannot drift from the
# outputs). Boots that fail are reported and make the script exit non-zero;
# nothing is averaged over a failed boot.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
gal=$repo/flamegraphs
data=${1:-$(mktemp -d /tmp/boottrace-gallery.XXXXXX)}
mkdir -p "$data"
# The Debian kernel the gallery shows. Debian's security archive drops old
# builds in time: when this one is gone, pick a newer one and say so here.
export BOOTTRACE_DEBIAN_PKG=${BOOTTRACE_DEBIAN_PKG:-linux-image-6.12.117+deb12-cloud-amd64-unsigned}

cargo build --release -q
# Honour CARGO_TARGET_DIR (a shared or cached build directory).
BT=${CARGO_TARGET_DIR:-$repo/target}/release/boottrace
FP=$(kernel/build.sh tiny-fp | tail -n 1)
ORC=$(kernel/build.sh tiny-orc | tail -n 1)
VZ=$(kernel/fetch-debian-cloud.sh | tail -n 1)
commit=$(git rev-parse --short HEAD)
dirty=$(git status --porcelain --untracked-files=no | grep -q . && echo " (with uncommitted changes)" || true)

failed=()
# rec NAME ARGS...: one recording; its stdout+stderr are kept next to the trace.
rec() {
    local name=$1; shift
    echo "make.sh: recording $name" >&2
    local status=0
    "$BT" record "$@" -q -o "$data/$name.data" > "$data/$name.log" 2>&1 || status=$?
    if [ "$status" -ne 0 ]; then
        echo "make.sh: $name: record exited with $status (see $data/$name.log)" >&2
        return 1
    fi
}

rec tiny-fp "$FP/bzImage" --initrd "$FP/initramfs.cpio" -F 1000 || failed+=(tiny-fp)
rec tiny-orc "$ORC/bzImage" --initrd "$ORC/initramfs.cpio" --cpus 2 -F 1000 || failed+=(tiny-orc)
rec mem-128M "$FP/bzImage" --initrd "$FP/initramfs.cpio" --mem 128M -F 1000 || failed+=(mem-128M)
rec mem-2G "$FP/bzImage" --initrd "$FP/initramfs.cpio" --mem 2G -F 1000 || failed+=(mem-2G)
# Debian's kernel cannot finish booting on a PVM host (see README): its
# recordings end with an emulation failure (exit status 1), which is the
# expected outcome there, so their status is checked from the trace below.
"$BT" record "$VZ" --mem 512M --timeout 400 -F 200 -q -o "$data/debian-cloud-bzimage.data" \
    > "$gal/debian-cloud-bzimage-stop.txt" 2>&1 || true
"$BT" record "$VZ" --skip-decompressor --mem 512M --timeout 400 -F 200 -q -o "$data/debian-cloud.data" \
    > "$data/debian-cloud.log" 2>&1 || true
for d in debian-cloud-bzimage debian-cloud; do
    [ -s "$data/$d.data" ] || { echo "make.sh: $d: no trace written" >&2; failed+=("$d"); }
done

echo "make.sh: rendering" >&2
"$BT" flame "$gal/tiny-fp-bzimage.svg" -i "$data/tiny-fp.data"
"$BT" flame "$gal/tiny-fp-faults.svg" -i "$data/tiny-fp.data" --weight faults
"$BT" flame "$gal/tiny-fp-chart.svg" -i "$data/tiny-fp.data" --chart
"$BT" flame "$gal/tiny-fp-wall.svg" -i "$data/tiny-fp.data" --weight wall
"$BT" report -i "$data/tiny-fp.data" > "$gal/tiny-fp-report.txt"
"$BT" export --format speedscope -i "$data/tiny-fp.data" -o "$gal/tiny-fp.speedscope.json"
"$BT" export --format chrome -i "$data/tiny-fp.data" -o "$gal/tiny-fp.chrome.json"
"$BT" export --format firefox -i "$data/tiny-fp.data" -o "$gal/tiny-fp.firefox.json"
"$BT" report -i "$data/tiny-fp.data" --html "$gal/tiny-fp-report.html"
"$BT" flame "$gal/tiny-orc.svg" -i "$data/tiny-orc.data"
"$BT" report -i "$data/tiny-orc.data" > "$gal/tiny-orc-report.txt"
"$BT" flame "$gal/debian-cloud-no-vmlinux.svg" -i "$data/debian-cloud.data"
"$BT" report -i "$data/debian-cloud.data" > "$gal/debian-cloud-report.txt"
"$BT" diff "$data/mem-128M.data" "$data/mem-2G.data" -o "$gal/mem-128M-vs-2G.svg" > "$gal/mem-128M-vs-2G.txt"
"$BT" diff "$data/mem-128M.data" "$data/mem-2G.data" --weight faults -o "$gal/mem-128M-vs-2G-faults.svg" \
    > "$gal/mem-128M-vs-2G-faults.txt"
for n in tiny-fp tiny-orc debian-cloud mem-128M mem-2G; do
    "$BT" report --json -i "$data/$n.data" > "$data/$n.json"
done

echo "make.sh: writing README.md" >&2
python3 - "$data" "$gal/README.md" "$commit$dirty" "$BOOTTRACE_DEBIAN_PKG" "$(uname -r)" \
    "$( [ -e /sys/module/kvm_pvm ] && echo pvm || echo kvm )" <<'PY'
import json, sys, datetime
data, out, commit, debpkg, hostkernel, kind = sys.argv[1:7]

def rep(name):
    return json.load(open(f"{data}/{name}.json"))

def s(ns):
    return f"{ns/1e9:.2f} s" if ns >= 1e9 else f"{ns/1e6:.1f} ms"

def figures(name):
    r = rep(name)
    run = r["runs"][0]
    ph = {p["name"]: p["time_ns"] for p in run["kernel_phases"]}
    u, sm = run["unwind"], run["sampler"]
    top = r["summary"]["top_self"][:5]
    lines = [
        f"- end: `{run['end_reason']}` — {run['end_detail']}",
        f"- boot (first instruction → end): **{s(run['boot_ns'])}**; samples **{run['samples']:,}**; "
        f"host page faults {run['faults']:,}; KVM exits {run['exits']:,}",
        "- kernel phases: " + ", ".join(f"{k} {s(v)}" for k, v in ph.items()),
        f"- unwind: **{u['percent']:.1f}%** of {u['considered']:,} kernel-mode samples after "
        f"`start_kernel` reach a known root ({u['truncated']:,} truncated)",
        f"- sampler: {sm['per_sample_ns']/1e3:.1f} µs per sample = **{sm['percent_of_boot']:.1f}%** of the boot",
        "- top functions (self): " + ", ".join(f"`{t['name']}` {t['share']*100:.1f}%" for t in top),
    ]
    waited = r["summary"].get("waited_ns")
    if waited:
        waits = r["summary"].get("waits", [])[:3]
        lines.append(f"- the boot thread waited **{s(waited['median'])}**; longest waits: " + "; ".join(
            f"`{w['name']}` {s(w['time_ns']['median'])} ({w['state']})" for w in waits))
    return "\n".join(lines)

def diff_head(path):
    with open(path) as f:
        return "".join(f.readlines()[:12])

now = datetime.date.today().isoformat()
timekind = ("**emulated-KVM time from a nested PVM host** (guest kernel code is emulated, "
            "about 1000x slower than real KVM; the profiles have an emulator's shape)"
            if kind == "pvm" else "real-KVM time")
doc = f"""# Gallery: real boottrace outputs

Generated by `flamegraphs/make.sh` (do not edit by hand: rerun it) from commit
`{commit}` on {now}, host kernel {hostkernel}. Every time below is an {timekind}.
Each boot was recorded once, one after the other; the traces stay outside the
repository. Debian kernel: `{debpkg}` (pinned in make.sh).

| file | what it shows |
| --- | --- |
| `tiny-fp-bzimage.svg` | tiny-fp bzImage (frame pointers, no KASLR) from the first instruction: decompressor, head code, `start_kernel`, initcalls |
| `tiny-fp-faults.svg` | the same recording weighted by host page faults |
| `tiny-fp-chart.svg` | the same recording as a time-ordered flame chart |
| `tiny-fp-wall.svg` | the same recording's wall-clock view (`--weight wall`): the boot thread's running stacks plus its blocked stacks, ending in `[wait]` (sleeping) or `[runnable]` |
| `tiny-fp-report.txt` | `report` of it |
| `tiny-fp.speedscope.json`, `tiny-fp.chrome.json` | speedscope and Chrome trace-event (Perfetto) exports of it |
| `tiny-fp.firefox.json` | its Firefox Profiler export (a track per vCPU, boot phases as categories, markers) |
| `tiny-fp-report.html` | its report as one self-contained page (`report --html`) |
| `tiny-orc.svg`, `tiny-orc-report.txt` | tiny-orc bzImage (ORC, SMP, KASLR) on 2 vCPUs |
| `debian-cloud-no-vmlinux.svg`, `debian-cloud-report.txt` | Debian's stock cloud kernel with no vmlinux: symbols from the image's own kallsyms; booted with `--skip-decompressor` |
| `debian-cloud-bzimage-stop.txt` | what `record` prints for the Debian bzImage as shipped |
| `mem-128M-vs-2G.svg`, `.txt` | diff of tiny-fp at `--mem 128M` vs `--mem 2G`: host time |
| `mem-128M-vs-2G-faults.svg`, `.txt` | the same diff weighted by host page faults |

## Commands

See `flamegraphs/make.sh`: every file above is made by one command there.

## tiny-fp (`tiny-fp-*.svg`, `tiny-fp-report.txt`, exports)

{figures("tiny-fp")}

## tiny-orc, 2 vCPUs (`tiny-orc.svg`, `tiny-orc-report.txt`)

{figures("tiny-orc")}

## Debian cloud kernel, no vmlinux (`debian-cloud-no-vmlinux.svg`, `debian-cloud-report.txt`)

{figures("debian-cloud")}

On a PVM host this kernel cannot finish booting: the emulator cannot run an
SSE instruction in kernel mode (`ldmxcsr` in `kernel_fpu_begin_mask`), and the
bzImage as shipped stops earlier, in its ZSTD decompressor (a BMI2 `shlx`;
see `debian-cloud-bzimage-stop.txt`). The trace keeps everything before the stop.

## 128M vs 2G (`mem-128M-vs-2G*.svg`, `.txt`)

- 128M: boot {s(rep("mem-128M")["runs"][0]["boot_ns"])}, host page faults {rep("mem-128M")["runs"][0]["faults"]:,}
- 2G: boot {s(rep("mem-2G")["runs"][0]["boot_ns"])}, host page faults {rep("mem-2G")["runs"][0]["faults"]:,}

The head of the diff table (`mem-128M-vs-2G.txt`):

```
{diff_head(out.rsplit('/', 1)[0] + '/mem-128M-vs-2G.txt')}```
"""
open(out, "w").write(doc)
PY

if [ ${#failed[@]} -gt 0 ]; then
    echo "make.sh: FAILED recordings: ${failed[*]} (traces and logs in $data)" >&2
    exit 1
fi
echo "make.sh: gallery rebuilt from $commit$dirty (traces in $data)" >&2
