/* sink_map.c: writing a transfer's bytes through a shared mapping of its tmpfs file.
 *
 * tmpfs lets one write()/pwrite() into a file run at a time (the inode lock), so many transfers
 * into one file, say a 16 GB shard, go no faster than one: 2.7-3.2 GB/s on a 16-core machine,
 * however many threads wait. A page fault on a shared mapping does not take that lock, and a
 * memcpy costs no system call. Each transfer maps its own range: the pages are reserved first
 * with fallocate, so a full tmpfs answers ENOSPC there rather than SIGBUS in a memcpy, and the
 * mapping is populated for writing in one call where the kernel offers it
 * (MADV_POPULATE_WRITE, Linux 5.14), which costs less than one fault per page. */
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "internal.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static bool populate_wanted(void)
{
    const char *v = getenv("OSSC_SINK_POPULATE"); /* EXPERIMENT: removed once measured */
    return !v || *v != '0';
}

bool sink_map_suits(int fd, uint64_t end)
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
    static long page;
    if (!page)
        page = sysconf(_SC_PAGESIZE);
    uint64_t base = offset - offset % (uint64_t)page;
    size_t len = (size_t)(offset + length - base);
    m->addr = NULL;
    /* fallocate itself, not posix_fallocate: that one falls back to writing zeros. */
    if (fallocate(fd, 0, (off_t)base, (off_t)len) != 0 && errno != EOPNOTSUPP)
        return errno;
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)base);
    if (p == MAP_FAILED)
        return errno;
    if (populate_wanted())
        (void)madvise(p, len, MADV_POPULATE_WRITE); /* older kernels: fault page by page */
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
