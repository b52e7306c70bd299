#!/usr/bin/env bash
# Fetch Debian's stock cloud kernel (a real kernel nobody here configured).
#
#   kernel/fetch-debian-cloud.sh [SERIES]    # SERIES: 6.12 (default) or 6.1
#
# Picks the newest linux-image-SERIES*-cloud-amd64-unsigned that apt knows
# (running apt-get update once if it knows none), downloads it with
# `apt-get download`, unpacks it with `dpkg -x` into a cache outside the
# repository, and prints the path of its vmlinuz as the last line.
# Cached: a second call costs milliseconds. Exit code 3: no such package.
set -euo pipefail

series=${1:-6.12}
case "$series" in
    *[!0-9.]*|"") echo "fetch-debian-cloud.sh: bad series '$series'" >&2; exit 2 ;;
esac
cache=${BOOTTRACE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/boottrace}/debian-cloud
# "6.1" must not match "6.12": the series is followed by '.' or '-'.
pattern="^linux-image-${series//./\\.}[.-][0-9].*-cloud-amd64-unsigned\$"

pick() {
    apt-cache search --names-only "$pattern" | awk '{print $1}' | sort -V | tail -n 1
}

# BOOTTRACE_DEBIAN_PKG pins the exact package (the gallery does); else the newest.
pick_or_pin() {
    if [ -n "${BOOTTRACE_DEBIAN_PKG:-}" ]; then
        apt-cache show "$BOOTTRACE_DEBIAN_PKG" >/dev/null 2>&1 && echo "$BOOTTRACE_DEBIAN_PKG"
    else
        pick
    fi
}

pkg=$(pick_or_pin || true)
if [ -z "$pkg" ]; then
    echo "fetch-debian-cloud.sh: no $series cloud kernel known to apt; running apt-get update" >&2
    apt-get update -q >&2 || true
    pkg=$(pick_or_pin || true)
fi
if [ -z "$pkg" ]; then
    echo "fetch-debian-cloud.sh: no package ${BOOTTRACE_DEBIAN_PKG:-matches $pattern} known to apt" >&2
    exit 3
fi

dir="$cache/$pkg"
if [ ! -f "$dir/.done" ]; then
    echo "fetch-debian-cloud.sh: downloading $pkg" >&2
    tmp="$dir.tmp"
    rm -rf "$tmp" && mkdir -p "$tmp/deb"
    (cd "$tmp/deb" && apt-get download -q "$pkg" >&2)
    dpkg -x "$tmp"/deb/*.deb "$tmp/root"
    # Only the image (and its config/System.map placeholder) is needed; modules are not.
    mkdir -p "$tmp/out"
    mv "$tmp"/root/boot/* "$tmp/out/"
    rm -rf "$dir" && mv "$tmp/out" "$dir" && rm -rf "$tmp"
    touch "$dir/.done"
fi
vmlinuz=$(find "$dir" -maxdepth 1 -name 'vmlinuz-*' | head -n 1)
[ -n "$vmlinuz" ] || { echo "fetch-debian-cloud.sh: no vmlinuz in $pkg" >&2; exit 1; }
echo "fetch-debian-cloud.sh: using $pkg" >&2
echo "$vmlinuz"
