/* shim_mmap.c: mmap and mmap64 of an fd of a large object wait until the mapped range is
 * present (page faults are invisible to the shim), then map the object's bytes; they fail
 * with the object's errno; anonymous mappings and other files are the real call. */
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fixture.h"

typedef void *(*mapper)(size_t len, int prot, int flags, int fd, int64_t off);

static void *by_mmap(size_t len, int prot, int flags, int fd, int64_t off)
{
    return mmap(NULL, len, prot, flags, fd, (off_t)off);
}

static void *by_mmap64(size_t len, int prot, int flags, int fd, int64_t off)
{
    return mmap64(NULL, len, prot, flags, fd, (off64_t)off);
}

/* c->ctx the mapper, c->fd, c->len, c->off, c->flags; the mapping in c->ptr. */
static long call_map(fx_call *c)
{
    mapper m = (mapper)(uintptr_t)c->ctx;
    int prot = c->flags & MAP_PRIVATE ? PROT_READ | PROT_WRITE : PROT_READ;
    c->ptr = m(c->len, prot, c->flags, c->fd, c->off);
    return c->ptr == MAP_FAILED ? -1 : 0;
}

static void check_mapper(mapper m, int error)
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    /* Chunks 1 and 2 of object 0 (from the first page boundary past chunk 0). */
    const uint32_t first = page == FX_CHUNK ? 1 : 0;
    fx_reset();
    int fd = open(fx_path(0), O_RDONLY);
    fx_call c = {.fn = call_map, .ctx = (const void *)(uintptr_t)m, .fd = fd,
                 .off = (int64_t)first * FX_CHUNK, .len = 2 * FX_CHUNK, .flags = MAP_SHARED};
    fx_start(&c);
    CHECK(fx_asks(&c, 0, first));
    fx_land(0, first);
    CHECK(fx_asks(&c, 0, first + 1));
    fx_land(0, first + 1);
    CHECK(fx_finish(&c) == 0);
    if (c.ptr != MAP_FAILED) {
        CHECK(fx_bytes(0, (uint64_t)c.off, c.ptr, c.len));
        munmap(c.ptr, c.len);
    }

    /* The whole object, private and writable (copy on write): it waits for the rest. */
    c = (fx_call){.fn = call_map, .ctx = (const void *)(uintptr_t)m, .fd = fd,
                  .len = fx_size(0), .flags = MAP_PRIVATE};
    fx_start(&c);
    CHECK(fx_asks(&c, 0, first ? 0 : 2));
    for (uint32_t k = 0; k < fx_chunks(0); k++)
        fx_land(0, k);
    CHECK(fx_finish(&c) == 0);
    if (c.ptr != MAP_FAILED) {
        CHECK(fx_bytes(0, 0, c.ptr, fx_size(0)));
        ((unsigned char *)c.ptr)[0] ^= 0xff; /* the mapping's page, not the file */
        munmap(c.ptr, c.len);
    }
    unsigned char byte;
    int data = open(fx_data_path(0), O_RDONLY);
    CHECK(pread(data, &byte, 1, 0) == 1 && byte == fx_byte(0, 0));
    close(data);

    /* Present: at once, without a request. */
    uint32_t w = fx_wanted();
    void *p = m(FX_CHUNK, PROT_READ, MAP_SHARED, fd, 0);
    CHECK(p != MAP_FAILED && fx_bytes(0, 0, p, FX_CHUNK));
    if (p != MAP_FAILED)
        munmap(p, FX_CHUNK);
    /* Anonymous, with our fd passed along (the kernel ignores it): no wait. */
    fx_release(0);
    p = m(FX_CHUNK, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, fd, 0);
    CHECK(p != MAP_FAILED && fx_zeros(p, FX_CHUNK));
    if (p != MAP_FAILED)
        munmap(p, FX_CHUNK);
    CHECK(fx_wanted() == w);
    close(fd);

    /* An object that cannot be fetched: MAP_FAILED with its errno. */
    fd = open(fx_path(1), O_RDONLY);
    c = (fx_call){.fn = call_map, .ctx = (const void *)(uintptr_t)m, .fd = fd,
                  .len = fx_size(1), .flags = MAP_SHARED};
    fx_start(&c);
    CHECK(fx_asks(&c, 1, 0));
    fx_fail(1, error);
    CHECK(fx_finish(&c) == -1 && errno == error && c.ptr == MAP_FAILED);
    errno = 0;
    CHECK(m(FX_CHUNK, PROT_READ, MAP_SHARED, fd, 0) == MAP_FAILED && errno == error);
    close(fd);

    /* Other files: the real call. */
    w = fx_wanted();
    fd = open(fx_outside(), O_RDONLY);
    p = m(FX_OUTSIDE_SIZE, PROT_READ, MAP_SHARED, fd, 0);
    CHECK(p != MAP_FAILED && fx_bytes(FX_OUTSIDE_KEY, 0, p, FX_OUTSIDE_SIZE));
    if (p != MAP_FAILED)
        munmap(p, FX_OUTSIDE_SIZE);
    close(fd);
    errno = 0;
    CHECK(m(FX_CHUNK, PROT_READ, MAP_SHARED, -1, 0) == MAP_FAILED && errno == EBADF);
    CHECK(fx_wanted() == w);
}

SHIM_TEST(mmap) { check_mapper(by_mmap, EACCES); }
SHIM_TEST(mmap64) { check_mapper(by_mmap64, ENOENT); }

int main(int argc, char **argv) { return fx_main(argc, argv); }
