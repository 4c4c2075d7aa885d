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
 * the item's pages are reserved with one fallocate before it is mapped: a fault on a reserved
 * page never needs a new one. When the reservation fails (ENOSPC, a full quota) the item is
 * written with pwrite instead, whose ENOSPC fails the item cleanly. A tmpfs file's pages are
 * allocated one thread at a time (fallocate holds the inode lock; faults that allocate contend on
 * the file's page-cache locks, 3-3.5 s of sys CPU per GB at 16 threads), so the fetch reserves
 * whole items ahead of their transfers, several files at once (fetch.c); faults on reserved
 * pages only zero and map them, in parallel (scripts/tmpfs_sink_bench.c). */
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
    /* Bytes already there keep their value; pages missing are allocated, or none is. */
    if (fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length) != 0)
        return errno;
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

void sink_map_close(sink_map *m)
{
    if (m->addr)
        munmap(m->addr, m->len);
    m->addr = m->at = NULL;
    m->len = 0;
}
