#!/usr/bin/env bash
# How guest memory is backed: default (faulted in as the guest touches it)
# vs --populate (pre-faulted by the VMM) vs --hugepages (2 MiB pages): guest
# page faults against the VMM's memory set-up time. tiny-fp, 128M, one boot
# each, interleaved, up to the kernel's "Memory:" line (UNTIL=user for whole
# boots). Huge pages must be reserved: as root this script
# reserves what the guest needs in /proc/sys/vm/nr_hugepages and restores
# the old value on exit; otherwise it needs them reserved already.
#   examples/seed/backing.sh
source "$(dirname "$0")/lib.sh"
mem_mb=128
need=$((mem_mb / 2))
nr=/proc/sys/vm/nr_hugepages
free_huge() { awk '/^HugePages_Free:/ {print $2}' /proc/meminfo; }
if [ "$(free_huge)" -lt "$need" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "$0: $need free 2 MiB huge pages needed (have $(free_huge)); run as root or reserve them" >&2
        exit 1
    fi
    old=$(cat "$nr")
    trap 'echo "$old" > "$nr"; echo "restored $nr to $old" >&2' EXIT
    echo $((old + need - $(free_huge))) > "$nr"
    if [ "$(free_huge)" -lt "$need" ]; then
        echo "$0: could reserve only $(free_huge) of $need huge pages" >&2
        exit 1
    fi
    echo "reserved huge pages: $nr $old -> $(cat "$nr")" >&2
fi
seed_sweep backing "$fp/bzImage" --initrd "$fp/initramfs.cpio" --mem "${mem_mb}M" \
    -F "$FREQ" --timeout 3600 --runs "${RUNS:-1}" --until "${UNTIL:-$UNTIL_MEMORY}" \
    --vary backing=default,populate,hugepages
settings_figures backing
