/* sink_map.c: writing an item's bytes through one shared mapping of its tmpfs file.
 *
 * tmpfs lets one write()/pwrite() into a file run at a time (the inode lock), so many transfers
 * into one file, a 16 GB shard say, go no faster than one: 2.2-2.5 GB/s on a 16-core machine
 * with 16 threads, against 2.6-3.2 with 2, and 5.5-6.4 s of sys CPU per GB spinning on the lock
 * (scripts/tmpfs_sink_bench.c). A page fault on a shared mapping does not take that lock, and a
 * memcpy costs no system call. The item is mapped once, for as long as its transfers run:
 * mapping and unmapping per chunk serialized the threads on the process's mmap lock.
 *
 * Pages are reserved (fallocate) before they are written, for two reasons. A full tmpfs answers
 * a page fault with SIGBUS, not ENOSPC, and a free-space check cannot prevent it (other items,
 * fetches, processes fill the same file system in the meantime); a fault on a reserved page
 * never needs a new one. And allocating a file's pages does not scale: faults that allocate into
 * one file contend on its page-cache and accounting locks (16 threads: 3.5-4.0 GB/s at 3.0-3.5 s
 * of sys per GB), while one fallocate allocates 7-9 GB/s and faults on reserved pages only zero
 * and map them, in parallel. The fetch reserves chunk by chunk, in the thread that starts each
 * transfer (fetch.c): an item's reservation in one piece held every other transfer into the item
 * for its 0.25-0.4 s per 2 GiB. A chunk whose reservation fails (ENOSPC, a full quota, EINTR) is
 * written with pwrite instead, whose ENOSPC fails the item cleanly. Populating pages ahead
 * (MADV_POPULATE_WRITE) was slower than faulting them in the copy (docs/BENCHMARKS.md). */
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "internal.h"

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

int sink_map_open(sink_map *m, int fd, uint64_t offset, uint64_t length)
{
    m->addr = m->at = NULL;
    m->len = 0;
    if (!suits(fd, offset + length))
        return ENOTSUP;
    long page = sysconf(_SC_PAGESIZE);
    uint64_t base = offset - offset % (uint64_t)page;
    size_t len = (size_t)(offset + length - base);
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)base);
    if (p == MAP_FAILED)
        return errno;
    m->addr = p;
    m->len = len;
    m->at = (char *)p + (offset - base);
    return 0;
}

int sink_map_reserve(int fd, uint64_t offset, uint64_t length)
{
    /* Every page the range touches is allocated, or none is: a failure leaves nothing to undo. */
    return fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length) == 0 ? 0 : errno;
}

void sink_map_close(sink_map *m)
{
    if (m->addr)
        munmap(m->addr, m->len);
    m->addr = m->at = NULL;
    m->len = 0;
}
