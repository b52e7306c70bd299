/* boottrace's test init: says it booted, pokes the Firecracker-style boot
 * marker (MMIO 0xd0000000 <- 123) when /dev/mem allows, and exits with a code.
 * Static, no libc features beyond write/open/mmap. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define BOOT_MARKER_ADDR 0xd0000000UL
#define BOOT_MARKER_VALUE 123

static void say(const char *s) { (void)write(1, s, strlen(s)); }

int main(void) {
    say("boottrace-init: userspace reached\n");
    int fd = open("/dev/mem", O_RDWR | O_SYNC);
    if (fd >= 0) {
        volatile unsigned char *p = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, BOOT_MARKER_ADDR);
        if (p != MAP_FAILED) {
            *p = BOOT_MARKER_VALUE;
            say("boottrace-init: boot marker written\n");
        }
        close(fd);
    }
    say("boottrace-init: exiting with code 7\n");
    return 7;
}
