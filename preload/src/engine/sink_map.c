/* sink_map.c: writing an item's bytes through one shared mapping of its tmpfs file.
 *
 * tmpfs lets one write()/pwrite() into a file run at a time (the inode lock), so many transfers
 * into one file, a 16 GB shard say, go no faster than one: 2.2-3.2 GB/s on a 16-core machine,
 * however many threads wait. A page fault on a shared mapping does not take that lock, and a
 * memcpy costs no system call. The item is mapped once, for as long as its transfers run:
 * mapping and unmapping per chunk (and reserving each chunk's pages with fallocate, which does
 * take the inode lock) serialized the threads on the process's mmap lock and the inode again,
 * for no gain over pwrite; populating each chunk's pages ahead (MADV_POPULATE_WRITE) was slower
 * than faulting them in the copy (docs/BENCHMARKS.md).
 *
 * A full tmpfs answers a page fault with SIGBUS, not ENOSPC, and a free-space check cannot
 * prevent it (other items, fetches, processes fill the same file system in the meantime). So
 * every byte's page is reserved (fallocate) before it is written through the mapping: a fault
 * on a reserved page never needs a new one. Where the reservation fails (ENOSPC, a full quota)
 * the rest is written with pwrite instead, whose ENOSPC fails the item cleanly. A tmpfs file's
 * pages are allocated one thread at a time (fallocate holds the inode lock; faults that
 * allocate contend on the file's page-cache locks, 3-3.5 s of sys CPU per GB at 16 threads), so
 * the fetch reserves items ahead of their transfers in 32 MiB spans, on several threads (one
 * file's spans too: its huge pages are made in parallel); faults on reserved pages only map
 * them (and zero 4 KiB ones), in parallel (fetch.c, scripts/tmpfs_sink_bench.c).
 *
 * Reserved pages are huge (2 MiB) wherever the kernel gives them (MADV_COLLAPSE, which works on
 * tmpfs whatever its huge= setting unless shmem_enabled is "deny"; the mapping is placed so
 * that the file's 2 MiB boundaries fall on the address's). Everything that later touches
 * the file gains: the transfers' writes fault once per 2 MiB (ossc get on 16 cores: 1.15-1.35x
 * the speed at 0.63x the CPU), a reader's copies and a GPU's pageable copy from it run faster,
 * and registering it with CUDA (OSSC_PIN_GPU) costs a fraction (docs/BENCHMARKS.md). */
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "huge_page.h"
#include "internal.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25 /* Linux 6.1; glibc 2.36's headers lack it */
#endif
/* Huge pages made slower than this (64 MiB in 250 ms, 0.27 GB/s) cost more than small pages
 * would: memory is being compacted for them. */
#define HUGE_MIN_BYTES_PER_MS ((64UL << 20) / 250)

/* fd is a tmpfs file open for reading and writing, at least end bytes long. */
static bool suits(int fd, uint64_t end)
{
    struct statfs fs;
    struct stat st;
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && (fl & O_ACCMODE) == O_RDWR && fstatfs(fd, &fs) == 0 &&
           fs.f_type == TMPFS_MAGIC && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
           (uint64_t)st.st_size >= end;
}

/* Makes each whole huge page of the file within [from, to) one huge page, before a byte is
 * written there: a huge page needs one page present (the rest of it is zeros), and costs one
 * copy of it. Gives up for good when a span fails (no huge page free, a kernel before 6.1,
 * shmem_enabled=deny, a process with PR_SET_THP_DISABLE) or is slow (memory to compact):
 * fallocate then reserves the rest in small pages. */
static void make_huge_pages(sink_map *m, uint64_t from, uint64_t to, size_t page)
{
    from = (from + OSSC_HUGE_PAGE - 1) / OSSC_HUGE_PAGE * OSSC_HUGE_PAGE;
    to -= to % OSSC_HUGE_PAGE;
    if (!atomic_load(&m->huge) || from >= to)
        return;
    uint64_t start_ms = now_ms(), base = m->offset - (uint64_t)(m->at - (char *)m->addr);
    for (uint64_t r = from; r < to; r += OSSC_HUGE_PAGE)
        if (fallocate(m->fd, FALLOC_FL_KEEP_SIZE, (off_t)r, (off_t)page) != 0)
            return; /* ENOSPC: the fallocate after this says so */
    if (madvise((char *)m->addr + (from - base), to - from, MADV_COLLAPSE) != 0) {
        LOGD("no huge pages for a tmpfs file (%s): small ones", strerror(errno));
        atomic_store(&m->huge, false);
    } else if ((now_ms() - start_ms) * HUGE_MIN_BYTES_PER_MS > to - from) {
        LOGD("huge pages for a tmpfs file come slowly: small ones");
        atomic_store(&m->huge, false);
    }
}

int sink_map_open(sink_map *m, int fd, uint64_t offset, uint64_t length)
{
    m->addr = m->at = NULL;
    m->len = 0;
    if (!suits(fd, offset + length))
        return ENOTSUP;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uint64_t base = offset - offset % page;
    size_t len = (size_t)(offset + length - base);
    void *p = ossc_mmap_huge_aligned(mmap, munmap, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                                     (off_t)base);
    if (p == MAP_FAILED)
        return errno;
    m->addr = p;
    m->len = len;
    m->at = (char *)p + (offset - base);
    m->fd = fd;
    m->offset = offset;
    atomic_init(&m->huge, true);
    return 0;
}

int sink_map_reserve(sink_map *m, uint64_t from, uint64_t to)
{
    make_huge_pages(m, m->offset + from, m->offset + to, (size_t)sysconf(_SC_PAGESIZE));
    /* Bytes already there keep their value; pages missing are allocated, or none is. */
    if (fallocate(m->fd, FALLOC_FL_KEEP_SIZE, (off_t)(m->offset + from), (off_t)(to - from)) != 0)
        return errno;
    return 0;
}

void sink_map_close(sink_map *m)
{
    if (m->addr)
        munmap(m->addr, m->len);
    m->addr = m->at = NULL;
    m->len = 0;
}
