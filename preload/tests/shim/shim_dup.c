/* shim_dup.c: dup, dup2, dup3, fcntl and fcntl64 (F_DUPFD, F_DUPFD_CLOEXEC). A duplicate of
 * an fd of a large object is one too: its reads wait like the original's, also once that is
 * closed, and one opened on a complete object never waits. A duplicate of another file is
 * not, even where its number was ours before. Everything else is the real call. */
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fixture.h"

#define HIGH 60 /* a number above every fd the test holds */

typedef struct duper {
    int (*fn)(int fd, int to); /* to: the number for dup2/dup3, the least one for F_DUPFD */
    bool exact;                /* the result is `to`, replacing what was there */
    bool cloexec;              /* sets FD_CLOEXEC */
} duper;

static int by_dup(int fd, int to) { (void)to; return dup(fd); }
static int by_dup2(int fd, int to) { return dup2(fd, to); }
static int by_dup3(int fd, int to) { return dup3(fd, to, O_CLOEXEC); }
static int by_fcntl(int fd, int to) { return fcntl(fd, F_DUPFD, to); }
static int by_fcntl_cloexec(int fd, int to) { return fcntl(fd, F_DUPFD_CLOEXEC, to); }
static int by_fcntl64(int fd, int to) { return fcntl64(fd, F_DUPFD, to); }
static int by_fcntl64_cloexec(int fd, int to) { return fcntl64(fd, F_DUPFD_CLOEXEC, to); }

static void check_duper(const duper *d)
{
    /* The duplicate waits like the original, which is closed first. */
    fx_reset();
    int fd = open(fx_path(0), O_RDONLY);
    int n = d->fn(fd, HIGH);
    CHECK(d->exact ? n == HIGH : n >= 0 && n != fd);
    CHECK(!(fcntl(n, F_GETFD) & FD_CLOEXEC) == !d->cloexec);
    close(fd);
    CHECK(fx_fd_waits(n, 0, 1));
    close(n);

    /* Of an fd opened on a complete object: never waits, like it. */
    fx_land_all(2);
    fd = open(fx_path(2), O_RDONLY);
    n = d->fn(fd, HIGH);
    fx_release(2);
    uint32_t w = fx_wanted();
    unsigned char buf[16];
    CHECK(pread(n, buf, 10, 0) == 10 && fx_bytes(2, 0, buf, 10));
    CHECK(fx_wanted() == w);
    close(n);
    close(fd);

    /* Of another file, on a number whose close the shim did not see: not ours. */
    fx_reset();
    int other = open(fx_outside(), O_RDONLY);
    fd = open(fx_path(0), O_RDONLY);
    CHECK(syscall(SYS_close, fd) == 0);
    n = d->fn(other, fd);
    CHECK(n == fd);
    CHECK(fx_reads_outside(n));
    close(n);
    if (d->exact) {
        /* Over an fd of ours: that number now names the other file. */
        fd = open(fx_path(0), O_RDONLY);
        CHECK(d->fn(other, fd) == fd);
        CHECK(fx_reads_outside(fd));
        close(fd);
    }
    n = d->fn(other, HIGH);
    CHECK(fx_reads_outside(n));
    close(n);
    close(other);

    /* The real call's errors. */
    CHECK_ERRNO(d->fn(-1, HIGH), EBADF);
    CHECK_ERRNO(d->fn(HIGH, HIGH + 1), EBADF);
}

/* dup2 of an fd onto itself: nothing changes, it is still ours. */
static void check_onto_itself(void)
{
    fx_reset();
    int fd = open(fx_path(0), O_RDONLY);
    CHECK(dup2(fd, fd) == fd);
    CHECK(fx_fd_waits(fd, 0, 0));
    CHECK_ERRNO(dup3(fd, fd, 0), EINVAL);
    CHECK(fx_fd_waits(fd, 0, 1));
    close(fd);
}

/* Other commands: the real fcntl, on fds of ours too. */
static void check_commands(int (*f)(int, int, ...))
{
    fx_reset();
    int fd = open(fx_path(0), O_RDONLY);
    CHECK((f(fd, F_GETFL) & O_ACCMODE) == O_RDONLY);
    CHECK(f(fd, F_SETFD, FD_CLOEXEC) == 0 && f(fd, F_GETFD) == FD_CLOEXEC);
    CHECK(f(fd, F_SETFL, O_NONBLOCK) == 0 && (f(fd, F_GETFL) & O_NONBLOCK));
    struct flock lk = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
    CHECK(f(fd, F_GETLK, &lk) == 0 && lk.l_type == F_UNLCK);
    CHECK(fx_fd_waits(fd, 0, 0));
    close(fd);
    CHECK_ERRNO(f(-1, F_GETFD), EBADF);
}

SHIM_TEST(dup) { check_duper(&(duper){by_dup, false, false}); }

SHIM_TEST(dup2)
{
    check_duper(&(duper){by_dup2, true, false});
    check_onto_itself();
}

SHIM_TEST(dup3) { check_duper(&(duper){by_dup3, true, true}); }

SHIM_TEST(fcntl)
{
    check_duper(&(duper){by_fcntl, false, false});
    check_duper(&(duper){by_fcntl_cloexec, false, true});
    check_commands(fcntl);
}

SHIM_TEST(fcntl64)
{
    check_duper(&(duper){by_fcntl64, false, false});
    check_duper(&(duper){by_fcntl64_cloexec, false, true});
    check_commands(fcntl64);
}

/* dup2(fd, n), or fcntl(fd, F_DUPFD, n) when c->off, for n beyond the fd table
 * (FD_TABLE_SIZE, 65536 numbers), then a read of the whole object through the duplicate. */
static long dup_and_read(fx_call *c)
{
    int n = c->off ? fcntl(c->fd, F_DUPFD, c->flags) : dup2(c->fd, c->flags);
    if (n < 0)
        return -1;
    long r = n >= c->flags ? pread(n, c->buf, c->len, 0) : -1;
    close(n);
    return r;
}

/* A duplicate beyond the fd table must not read the object's holes: the dup waits for the
 * whole object (open hands out an untrackable fd only then too), or fails with its errno
 * and leaves the number as it was. */
SHIM_TEST(dup_beyond_table)
{
    const rlim_t beyond = 65536 + 8;
    struct rlimit rl = {0};
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur <= beyond) {
        struct rlimit more = {beyond + 1, rl.rlim_max > beyond ? rl.rlim_max : beyond + 1};
        if (setrlimit(RLIMIT_NOFILE, &more) != 0) {
            char why[128];
            snprintf(why, sizeof(why), "RLIMIT_NOFILE is %llu and cannot be raised past %llu: %s",
                     (unsigned long long)rl.rlim_max, (unsigned long long)beyond,
                     strerror(errno));
            fx_skip(why);
            return;
        }
    }
    for (int64_t by_fcntl = 0; by_fcntl < 2; by_fcntl++) {
        fx_reset();
        fx_call c = {.fn = dup_and_read, .fd = open(fx_path(0), O_RDONLY), .flags = (int)beyond,
                     .len = fx_size(0), .off = by_fcntl};
        fx_start(&c);
        CHECK(fx_asks(&c, 0, 0));
        fx_land_all(0);
        CHECK(fx_finish(&c) == (long)fx_size(0));
        CHECK(fx_bytes(0, 0, c.buf, fx_size(0)));
        close(c.fd);

        c = (fx_call){.fn = dup_and_read, .fd = open(fx_path(1), O_RDONLY), .flags = (int)beyond,
                      .len = fx_size(1), .off = by_fcntl};
        fx_start(&c);
        CHECK(fx_asks(&c, 1, 0));
        fx_fail(1, EACCES);
        CHECK(fx_finish(&c) == -1 && errno == EACCES);
        CHECK_ERRNO(fcntl((int)beyond, F_GETFD), EBADF);
        close(c.fd);
    }
    setrlimit(RLIMIT_NOFILE, &rl);
}

int main(int argc, char **argv) { return fx_main(argc, argv); }
