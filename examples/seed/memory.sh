#!/usr/bin/env bash
# Guest memory: tiny-fp with 128M, 512M and 2G, one boot each, interleaved,
# up to the kernel's "Memory:" line (memory set-up done; UNTIL=user for
# whole boots).
# Page-structure initialisation (memmap_init_range, __init_single_page,
# memblock_free_all → __free_pages_core) and the host page faults of the
# vCPU thread grow with memory.
#   examples/seed/memory.sh
source "$(dirname "$0")/lib.sh"
seed_sweep memory "$fp/bzImage" --initrd "$fp/initramfs.cpio" \
    -F "$FREQ" --timeout 3600 --runs "${RUNS:-1}" --until "${UNTIL:-$UNTIL_MEMORY}" \
    --vary mem=128M,512M,2G
settings_figures memory
