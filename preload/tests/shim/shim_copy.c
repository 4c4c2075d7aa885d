/* shim_copy.c: sendfile, sendfile64 and copy_file_range from an fd of a large object wait
 * for the source range (at the given offset, or the file offset), copy the object's bytes,
 * and fail with the object's errno; from other files they are the real call. */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include "fixture.h"

/* Copies c->len bytes from c->fd into c->flags (the destination fd), at c->off or, when
 * c->off is -1, at the file offset. */
static long by_sendfile(fx_call *c)
{
    off_t off = (off_t)c->off;
    long n = sendfile(c->flags, c->fd, c->off < 0 ? NULL : &off, c->len);
    c->off = c->off < 0 ? -1 : off;
    return n;
}

static long by_sendfile64(fx_call *c)
{
    off64_t off = (off64_t)c->off;
    long n = sendfile64(c->flags, c->fd, c->off < 0 ? NULL : &off, c->len);
    c->off = c->off < 0 ? -1 : off;
    return n;
}

static long by_copy_file_range(fx_call *c)
{
    off64_t off = (off64_t)c->off;
    long n = copy_file_range(c->fd, c->off < 0 ? NULL : &off, c->flags, NULL, c->len, 0);
    c->off = c->off < 0 ? -1 : off;
    return n;
}

/* A destination on the data files' file system (copy_file_range needs one), unlinked. */
static int destination(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/copy-XXXXXX", dir);
    int fd = mkstemp(path);
    CHECK(fd >= 0 && unlink(path) == 0);
    return fd;
}

/* Whether dst holds key's bytes [off, off+len) and nothing more. */
static bool copied(int dst, int key, uint64_t off, size_t len)
{
    static unsigned char buf[5 * FX_CHUNK];
    ssize_t n = pread(dst, buf, sizeof(buf), 0);
    bool ok = n == (ssize_t)len && fx_bytes(key, off, buf, len);
    CHECK(ftruncate(dst, 0) == 0 && lseek(dst, 0, SEEK_SET) == 0);
    return ok;
}

static void check_copier(long (*fn)(fx_call *), int error)
{
    fx_reset();
    int dst = destination(fx_session_dir());
    /* From an offset: waits for each missing chunk of the range, then copies, and moves the
     * offset (not the file's). */
    fx_call c = {.fn = fn, .fd = open(fx_path(0), O_RDONLY), .flags = dst,
                 .off = FX_CHUNK + 7, .len = FX_CHUNK};
    fx_start(&c);
    CHECK(fx_asks(&c, 0, 1));
    fx_land(0, 1);
    CHECK(fx_asks(&c, 0, 2));
    fx_land(0, 2);
    CHECK(fx_finish(&c) == (long)FX_CHUNK);
    CHECK(c.off == 2 * FX_CHUNK + 7);
    CHECK(lseek(c.fd, 0, SEEK_CUR) == 0);
    CHECK(copied(dst, 0, FX_CHUNK + 7, FX_CHUNK));

    /* From the file offset (NULL), past the end: the last chunk, and what there is. */
    CHECK(lseek(c.fd, (off_t)fx_size(0) - 1, SEEK_SET) == (off_t)fx_size(0) - 1);
    c.off = -1;
    c.len = 100;
    fx_start(&c);
    CHECK(fx_asks(&c, 0, fx_chunks(0) - 1));
    fx_land(0, fx_chunks(0) - 1);
    CHECK(fx_finish(&c) == 1);
    CHECK(lseek(c.fd, 0, SEEK_CUR) == (off_t)fx_size(0));
    CHECK(copied(dst, 0, fx_size(0) - 1, 1));

    /* Present: at once. */
    uint32_t w = fx_wanted();
    c.off = FX_CHUNK;
    c.len = 2 * FX_CHUNK;
    CHECK(fn(&c) == (long)(2 * FX_CHUNK));
    CHECK(copied(dst, 0, FX_CHUNK, 2 * FX_CHUNK));
    CHECK(fx_wanted() == w);
    close(c.fd);

    /* An object that cannot be fetched: its errno, nothing copied. */
    c = (fx_call){.fn = fn, .fd = open(fx_path(1), O_RDONLY), .flags = dst, .off = 0, .len = 10};
    fx_start(&c);
    CHECK(fx_asks(&c, 1, 0));
    fx_fail(1, error);
    CHECK(fx_finish(&c) == -1 && errno == error);
    c.off = -1;
    CHECK_ERRNO(fn(&c), error);
    CHECK(copied(dst, 1, 0, 0));
    close(c.fd);
    close(dst);

    /* Other files: the real call. */
    w = fx_wanted();
    dst = destination(fx_base());
    c = (fx_call){.fn = fn, .fd = open(fx_outside(), O_RDONLY), .flags = dst, .off = 10,
                  .len = 2 * FX_CHUNK};
    CHECK(fn(&c) == (long)(2 * FX_CHUNK));
    CHECK(copied(dst, FX_OUTSIDE_KEY, 10, 2 * FX_CHUNK));
    close(c.fd);
    c.fd = -1;
    CHECK_ERRNO(fn(&c), EBADF);
    close(dst);
    CHECK(fx_wanted() == w);
}

SHIM_TEST(sendfile) { check_copier(by_sendfile, EACCES); }
SHIM_TEST(sendfile64) { check_copier(by_sendfile64, ENOENT); }
SHIM_TEST(copy_file_range) { check_copier(by_copy_file_range, EIO); }

int main(int argc, char **argv) { return fx_main(argc, argv); }
