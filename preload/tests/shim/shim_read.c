/* shim_read.c: read, pread, pread64, readv, preadv, preadv64, preadv2, preadv64v2 on an fd of
 * a large object wait for [offset, offset + length), one missing chunk at a time, return the
 * object's bytes once they have landed, and fail with the object's errno; on an fd opened on
 * a complete object, and outside MODEL_DIR, they are the real call. */
#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fixture.h"

/* Every reader reads c->len bytes into c->buf, at c->off (-1: at the file offset). */
static void halves(fx_call *c, struct iovec iov[2])
{
    size_t h = c->len / 3;
    iov[0] = (struct iovec){c->buf, h};
    iov[1] = (struct iovec){c->buf + h, c->len - h};
}

static long by_read(fx_call *c) { return read(c->fd, c->buf, c->len); }
static long by_pread(fx_call *c) { return pread(c->fd, c->buf, c->len, (off_t)c->off); }
static long by_pread64(fx_call *c) { return pread64(c->fd, c->buf, c->len, (off64_t)c->off); }

static long by_readv(fx_call *c)
{
    struct iovec iov[2];
    halves(c, iov);
    return readv(c->fd, iov, 2);
}

static long by_preadv(fx_call *c)
{
    struct iovec iov[2];
    halves(c, iov);
    return preadv(c->fd, iov, 2, (off_t)c->off);
}

static long by_preadv64(fx_call *c)
{
    struct iovec iov[2];
    halves(c, iov);
    return preadv64(c->fd, iov, 2, (off64_t)c->off);
}

static long by_preadv2(fx_call *c)
{
    struct iovec iov[2];
    halves(c, iov);
    return preadv2(c->fd, iov, 2, (off_t)c->off, 0);
}

static long by_preadv64v2(fx_call *c)
{
    struct iovec iov[2];
    halves(c, iov);
    return preadv64v2(c->fd, iov, 2, (off64_t)c->off, 0);
}

/* Points the next call at off: through the file offset when at_file_offset (c->off -1). */
static void aim(fx_call *c, int64_t off, size_t len, bool at_file_offset)
{
    c->len = len;
    c->off = at_file_offset ? -1 : off;
    if (at_file_offset)
        CHECK(lseek(c->fd, (off_t)off, SEEK_SET) == (off_t)off);
}

static void check_reader(long (*fn)(fx_call *), bool at_file_offset, int error)
{
    fx_reset();
    /* Two missing chunks: it asks for the first, then the second, then returns the bytes. */
    fx_call c = {.fn = fn, .fd = open(fx_path(0), O_RDONLY)};
    CHECK(c.fd >= 0);
    aim(&c, FX_CHUNK + 10, FX_CHUNK + 20, at_file_offset);
    fx_start(&c);
    CHECK(fx_asks(&c, 0, 1));
    fx_land(0, 1);
    CHECK(fx_asks(&c, 0, 2));
    fx_land(0, 2);
    CHECK(fx_finish(&c) == (long)(FX_CHUNK + 20));
    CHECK(fx_bytes(0, FX_CHUNK + 10, c.buf, FX_CHUNK + 20));
    CHECK(lseek(c.fd, 0, SEEK_CUR) == (at_file_offset ? 2 * FX_CHUNK + 30 : 0));

    /* A range that is present: the bytes, without a request. */
    uint32_t w = fx_wanted();
    aim(&c, FX_CHUNK + 500, 100, at_file_offset);
    CHECK(fn(&c) == 100);
    CHECK(fx_bytes(0, FX_CHUNK + 500, c.buf, 100));
    CHECK(fx_wanted() == w);

    /* Past the object's end: it waits for the last chunk only, and returns what there is. */
    aim(&c, (int64_t)fx_size(0) - 1, 300, at_file_offset);
    fx_start(&c);
    CHECK(fx_asks(&c, 0, fx_chunks(0) - 1));
    fx_land(0, fx_chunks(0) - 1);
    CHECK(fx_finish(&c) == 1);
    CHECK(fx_bytes(0, fx_size(0) - 1, c.buf, 1));

    /* At the end, and a read of nothing where nothing landed: at once, without a request. */
    w = fx_wanted();
    aim(&c, (int64_t)fx_size(0), 100, at_file_offset);
    CHECK(fn(&c) == 0);
    aim(&c, 0, 0, at_file_offset);
    CHECK(fn(&c) == 0);
    CHECK(fx_wanted() == w);
    close(c.fd);

    /* An object that cannot be fetched: the blocked call fails with its errno, later calls
     * at once. */
    c.fd = open(fx_path(1), O_RDONLY);
    CHECK(c.fd >= 0);
    aim(&c, FX_CHUNK + 1, 10, at_file_offset);
    fx_start(&c);
    CHECK(fx_asks(&c, 1, 1));
    fx_fail(1, error);
    CHECK(fx_finish(&c) == -1 && errno == error);
    aim(&c, 0, 10, at_file_offset);
    CHECK_ERRNO(fn(&c), error);
    close(c.fd);

    /* An fd opened on a complete object never waits, even once its data file is released. */
    fx_land_all(2);
    c.fd = open(fx_path(2), O_RDONLY);
    fx_release(2);
    w = fx_wanted();
    aim(&c, 0, 10, at_file_offset);
    CHECK(fn(&c) == 10);
    CHECK(fx_bytes(2, 0, c.buf, 10));
    CHECK(fx_wanted() == w);
    close(c.fd);

    /* Outside MODEL_DIR, and a small file in it: the real call. */
    c.fd = open(fx_outside(), O_RDONLY);
    aim(&c, 100, 2 * FX_CHUNK, at_file_offset);
    CHECK(fn(&c) == (long)(2 * FX_CHUNK));
    CHECK(fx_bytes(FX_OUTSIDE_KEY, 100, c.buf, 2 * FX_CHUNK));
    close(c.fd);
    c.fd = open(fx_small(), O_RDONLY);
    aim(&c, 0, 1000, at_file_offset);
    CHECK(fn(&c) == (long)strlen(FX_SMALL_TEXT));
    CHECK(memcmp(c.buf, FX_SMALL_TEXT, strlen(FX_SMALL_TEXT)) == 0);
    close(c.fd);
    CHECK(fx_wanted() == w);
    CHECK_ERRNO(fn(&(fx_call){.fd = -1, .len = 1}), EBADF);
}

/* The log line of a failed read of object 1's first 10 bytes, which ends with the errno's
 * name (EACCES). */
static const char *failure_line(const char *reason, int error)
{
    static char line[4200];
    snprintf(line, sizeof(line), "%s: bytes 0-9 are not here and %s: %s", fx_path(1), reason,
             strerrorname_np(error));
    return line;
}

/* A blocked read of object 1's first 10 bytes, ended by `end`: it fails with `error`, and
 * the shim logs one line naming the file, the range, the reason and the errno. */
static void check_failure(void (*end)(void), int error, const char *reason)
{
    fx_reset();
    int before = fx_log_count(fx_shim_log(), failure_line(reason, error));
    fx_call c = {.fn = by_read, .fd = open(fx_path(1), O_RDONLY), .len = 10};
    fx_start(&c);
    CHECK(fx_asks(&c, 1, 0));
    end();
    CHECK(fx_finish(&c) == -1 && errno == error);
    CHECK(fx_log_count(fx_shim_log(), failure_line(reason, error)) == before + 1);
    close(c.fd);
}

static void refuse_object(void) { fx_fail(1, EACCES); }
static void stop_prefetch(void) { fx_state(OSSC_SESSION_FAILED); }

SHIM_TEST(read)
{
    check_reader(by_read, true, EACCES);
    check_failure(refuse_object, EACCES, "it could not be fetched");
    check_failure(stop_prefetch, EIO, "the prefetch was stopped");
    check_failure(fx_owner_dies, EIO, "the owner process died");
    /* readTimeoutSec: a read that waited that long fails with EIO (no request answered). */
    fx_reset();
    fx_read_timeout(1);
    int before = fx_log_count(fx_shim_log(), failure_line("the read timeout passed", EIO));
    int fd = open(fx_path(1), O_RDONLY);
    char buf[10];
    fx_expect_waits(true);
    CHECK_ERRNO(read(fd, buf, sizeof(buf)), EIO);
    fx_expect_waits(false);
    CHECK(fx_log_count(fx_shim_log(), failure_line("the read timeout passed", EIO)) == before + 1);
    close(fd);
}

SHIM_TEST(pread) { check_reader(by_pread, false, ENOENT); }
SHIM_TEST(pread64) { check_reader(by_pread64, false, EIO); }
SHIM_TEST(readv) { check_reader(by_readv, true, EACCES); }
SHIM_TEST(preadv) { check_reader(by_preadv, false, ENOENT); }
SHIM_TEST(preadv64) { check_reader(by_preadv64, false, EIO); }

SHIM_TEST(preadv2)
{
    check_reader(by_preadv2, false, EACCES);
    check_reader(by_preadv2, true, ENOENT); /* offset -1: the file offset */
}

SHIM_TEST(preadv64v2)
{
    check_reader(by_preadv64v2, false, EIO);
    check_reader(by_preadv64v2, true, EACCES);
}

int main(int argc, char **argv) { return fx_main(argc, argv); }
