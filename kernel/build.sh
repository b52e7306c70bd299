#!/usr/bin/env bash
# Build a boottrace test kernel from Debian's linux-source-6.12.
#
#   kernel/build.sh NAME        # NAME = tiny-fp | tiny-orc (kernel/configs/NAME.config)
#
# Installs what it needs with apt when missing. Results are cached outside the
# repository by a hash of (source version, config fragments, this script, the
# init program), so a second call costs seconds. The last line printed is the
# directory holding bzImage, vmlinux, System.map, decompressor.elf
# (arch/x86/boot/compressed/vmlinux), config, initramfs.cpio and rootfs.ext4
# (the same init in an ext4 image, for --disk rootfs.ext4 --root /dev/vda).
set -euo pipefail

name=${1:?usage: kernel/build.sh NAME (tiny-fp, tiny-orc)}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
frag="$here/configs/$name.config"
[ -f "$frag" ] || { echo "kernel/build.sh: no config fragment $frag" >&2; exit 2; }
cache=${BOOTTRACE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/boottrace}
jobs=$(( $(nproc) + 1 ))

need_pkgs=()
[ -f /usr/src/linux-source-6.12.tar.xz ] || need_pkgs+=(linux-source-6.12)
for tool in flex:flex bison:bison bc:bc cpio:cpio lz4:lz4 gcc:gcc make:make xz:xz-utils; do
    command -v "${tool%%:*}" >/dev/null || need_pkgs+=("${tool#*:}")
done
[ -f /usr/include/libelf.h ] || need_pkgs+=(libelf-dev)
[ -f /usr/include/openssl/ssl.h ] || need_pkgs+=(libssl-dev)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || need_pkgs+=(libc6-dev)
command -v mke2fs >/dev/null || [ -x /usr/sbin/mke2fs ] || need_pkgs+=(e2fsprogs)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "kernel/build.sh: installing ${need_pkgs[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q "${need_pkgs[@]}" >&2
fi

# Bump when the recipe below changes what ends up in the output directory.
recipe=2
srcver=$(dpkg-query -W -f='${Version}' linux-source-6.12)
key=$( { echo "$srcver recipe=$recipe"; cat "$here/configs/base.config" "$frag" "$repo/examples/init/init.c"; } | sha256sum | cut -c1-16)
out="$cache/kernels/$name-$key"
mkdir -p "$cache/kernels"
# One build of a given kernel at a time (parallel test runs share the cache).
exec 9>"$cache/kernels/.lock-$name"
flock 9
if [ -f "$out/.done" ]; then
    echo "kernel/build.sh: $name cached ($srcver)" >&2
    echo "$out"
    exit 0
fi

src="$cache/src/linux-source-$srcver"
if [ ! -f "$src/.extracted" ]; then
    echo "kernel/build.sh: extracting linux-source $srcver" >&2
    rm -rf "$src" && mkdir -p "$src"
    tar -xJf /usr/src/linux-source-6.12.tar.xz -C "$src" --strip-components=1
    touch "$src/.extracted"
fi

build="$cache/build/$name"
mkdir -p "$build"
echo "kernel/build.sh: configuring $name" >&2
make -s -C "$src" O="$build" tinyconfig >&2
KCONFIG_CONFIG="$build/.config" "$src/scripts/kconfig/merge_config.sh" -m -O "$build" \
    "$build/.config" "$here/configs/base.config" "$frag" >&2
make -s -C "$src" O="$build" olddefconfig >&2
# Fail loudly when Kconfig dropped an option we rely on.
missing=0
while IFS= read -r line; do
    case "$line" in ""|\#*) continue ;; esac
    opt=${line%%=*}; val=${line#*=}
    if [ "$val" = n ]; then
        grep -q "^$opt=" "$build/.config" && { echo "kernel/build.sh: $opt still set" >&2; missing=1; }
    else
        grep -qx "$opt=$val" "$build/.config" || { echo "kernel/build.sh: $opt=$val did not stick" >&2; missing=1; }
    fi
done < <(cat "$here/configs/base.config" "$frag")
[ $missing -eq 0 ] || exit 1

echo "kernel/build.sh: building $name with -j$jobs (a few minutes)" >&2
make -s -C "$src" O="$build" -j"$jobs" bzImage >&2

tmp="$out.tmp"
rm -rf "$tmp" && mkdir -p "$tmp"
cp "$build/arch/x86/boot/bzImage" "$build/vmlinux" "$build/System.map" "$tmp/"
cp "$build/arch/x86/boot/compressed/vmlinux" "$tmp/decompressor.elf"
cp "$build/.config" "$tmp/config"

# The init program, packed with the kernel's own gen_init_cpio (device nodes
# without needing mknod on the host).
gcc -static -Os -Wall -o "$tmp/init" "$repo/examples/init/init.c"
cat > "$tmp/initramfs.list" <<LIST
dir /dev 0755 0 0
nod /dev/console 0600 0 0 c 5 1
nod /dev/mem 0600 0 0 c 1 1
file /init $tmp/init 0755 0 0
LIST
"$build/usr/gen_init_cpio" "$tmp/initramfs.list" > "$tmp/initramfs.cpio"
# The ext4 root: the same init, device nodes made with debugfs (no root
# privileges, no mknod on the host). 8 MiB: room for init and a few writes.
PATH="$PATH:/usr/sbin:/sbin"
rootdir="$tmp/rootfs.d"
mkdir -p "$rootdir/dev" "$rootdir/proc" "$rootdir/sys" "$rootdir/tmp"
cp "$tmp/init" "$rootdir/init"
mkdir -p "$rootdir/sbin" && cp "$tmp/init" "$rootdir/sbin/init"
mke2fs -q -F -t ext4 -L boottrace-root -E root_owner=0:0 -d "$rootdir" "$tmp/rootfs.ext4" 8M >&2
debugfs -w -f - "$tmp/rootfs.ext4" >&2 <<'DEBUGFS'
cd /dev
mknod console c 5 1
sif console mode 020600
mknod mem c 1 1
sif mem mode 020600
DEBUGFS
rm -rf "$rootdir"
echo "$srcver" > "$tmp/source-version"
touch "$tmp/.done"
rm -rf "$out" && mv "$tmp" "$out"
echo "$out"
