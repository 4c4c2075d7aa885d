/* huge_page.h: placing a mapping of a tmpfs file so that its huge pages are mapped whole,
 * alike in the owner (libossc writes the data files through such mappings, sink_map.c) and in
 * the shim (a reader's mmap of a data file, hooks.c).
 *
 * A huge page of a file is mapped by one page-table entry only where its virtual address is
 * aligned as its offset in the file; a tmpfs mounted without huge= (/dev/shm) gets no such
 * address from the kernel, so its huge pages are mapped 4 KiB at a time: touching them takes
 * 3x the time, and the TLB holds 4 KiB entries (docs/BENCHMARKS.md).
 *
 * Only plain C and libc: the shim includes it and links nothing but libc.
 */
#ifndef OSSC_HUGE_PAGE_H
#define OSSC_HUGE_PAGE_H

#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

#define OSSC_HUGE_PAGE (2UL << 20)
/* mmap and mmap64 are one function (the shim's hooks pass either one's offset as off_t). */
_Static_assert(sizeof(off_t) == sizeof(int64_t), "64-bit file offsets");

typedef void *(*ossc_mmap_fn)(void *, size_t, int, int, int, off_t);
typedef int (*ossc_munmap_fn)(void *, size_t);

/* mmap(NULL, len, prot, flags, fd, offset) at an address congruent to offset modulo a huge
 * page, through map and unmap (the shim passes the real functions, not its hooks). */
static inline void *ossc_mmap_huge_aligned(ossc_mmap_fn map, ossc_munmap_fn unmap, size_t len,
                                           int prot, int flags, int fd, off_t offset)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE), room = len + OSSC_HUGE_PAGE;
    size_t whole = (len + page - 1) / page * page;
    char *area = map(NULL, room, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (area == MAP_FAILED)
        return MAP_FAILED;
    char *at = area + ((uint64_t)offset % OSSC_HUGE_PAGE - (uintptr_t)area % OSSC_HUGE_PAGE +
                       OSSC_HUGE_PAGE) % OSSC_HUGE_PAGE;
    void *p = map(at, len, prot, flags | MAP_FIXED, fd, offset);
    if (p == MAP_FAILED) {
        int e = errno;
        unmap(area, room);
        errno = e;
        return MAP_FAILED;
    }
    if (at > area)
        unmap(area, (size_t)(at - area));
    if (area + room > at + whole)
        unmap(at + whole, (size_t)(area + room - (at + whole)));
    return p;
}

#endif
