/* shim_close.c: close and close_range forget an fd of a large object, so that the next file
 * to get its number is not taken for the object's; close writes one audit line for it;
 * close_range with CLOSE_RANGE_CLOEXEC closes nothing and forgets nothing. */
#include <fcntl.h>
#include <linux/close_range.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fixture.h"

#define HIGH 60 /* a number above every fd the test holds */

SHIM_TEST(close)
{
    char line[4200];
    snprintf(line, sizeof(line), "path=%s/%s bytes=%llu waited_ms=", fx_model_dir(),
             fx_name(0), (unsigned long long)fx_size(0));
    int audited = fx_log_count(fx_audit_log(), line);
    int lines = fx_log_count(fx_audit_log(), "");

    int fd = open(fx_path(0), O_RDONLY);
    CHECK(fx_fd_waits(fd, 0, 1));
    CHECK(close(fd) == 0);
    CHECK(fx_log_count(fx_audit_log(), line) == audited + 1);
    int other = open(fx_outside(), O_RDONLY);
    CHECK(other == fd);
    CHECK(fx_reads_outside(other));
    CHECK(close(other) == 0);
    CHECK(fx_log_count(fx_audit_log(), "") == lines + 1); /* none for the outside file */

    /* The real call's errors, for ours too. */
    CHECK_ERRNO(close(-1), EBADF);
    CHECK_ERRNO(close(fd), EBADF);
}

/* Puts the outside file at fd `at` past the shim (a raw dup3: nothing the shim sees). */
static void place_outside(int at)
{
    int other = open(fx_outside(), O_RDONLY);
    CHECK(syscall(SYS_dup3, other, at, 0) == at);
    close(other);
}

SHIM_TEST(close_range)
{
    /* Two of ours with another file between them: all three closed, ours forgotten. */
    int a = open(fx_path(0), O_RDONLY), b = open(fx_outside(), O_RDONLY);
    int c = open(fx_path(1), O_RDONLY);
    CHECK(dup2(a, HIGH) == HIGH && dup2(b, HIGH + 1) == HIGH + 1 && dup2(c, HIGH + 2) == HIGH + 2);
    close(a), close(b), close(c);
    CHECK(close_range(HIGH, HIGH + 2, 0) == 0);
    for (int fd = HIGH; fd <= HIGH + 2; fd++) {
        CHECK_ERRNO(fcntl(fd, F_GETFD), EBADF);
        place_outside(fd);
        CHECK(fx_reads_outside(fd));
        close(fd);
    }

    /* CLOSE_RANGE_CLOEXEC: still open, still ours. */
    a = open(fx_path(0), O_RDONLY);
    CHECK(close_range((unsigned)a, (unsigned)a, CLOSE_RANGE_CLOEXEC) == 0);
    CHECK(fcntl(a, F_GETFD) == FD_CLOEXEC);
    CHECK(fx_fd_waits(a, 0, 0));

    /* The real call's errors; the fd stays ours. */
    CHECK_ERRNO(close_range((unsigned)a, (unsigned)a - 1, 0), EINVAL);
    CHECK_ERRNO(close_range((unsigned)a, (unsigned)a, 0x80000000u), EINVAL);
    CHECK(fx_fd_waits(a, 0, 1));
    /* The lowest free number, reused by the next open, is not ours any more. */
    CHECK(close_range((unsigned)a, (unsigned)a, 0) == 0);
    CHECK(open(fx_outside(), O_RDONLY) == a && fx_reads_outside(a));
    close(a);
}

/* An fd of ours closed where the shim cannot see it (fclose of an fdopen'ed stream closes
 * inside libc): the next file to get its number is not the object's. */
SHIM_TEST(fdopen_fclose)
{
    int fd = open(fx_path(0), O_RDONLY);
    FILE *f = fdopen(fd, "rb");
    CHECK(f != NULL);
    if (f)
        fclose(f);
    int other = open(fx_outside(), O_RDONLY);
    CHECK(other == fd);
    CHECK(fx_reads_outside(other));
    close(other);
}

/* An fd of ours closed where no hook sees it (a raw close), its number reused by a call the
 * shim does not hook either (a raw dup3 here; socket, pipe, memfd_create alike): reads and
 * mappings through that number are the new file's, at once, and its close is not audited
 * as the object's. */
/* An fd of ours closed raw, and the outside file put at its number raw (dup3). */
static int reused_unseen(void)
{
    int other = open(fx_outside(), O_RDONLY), fd = open(fx_path(0), O_RDONLY);
    CHECK(syscall(SYS_close, fd) == 0 && syscall(SYS_dup3, other, fd, 0) == fd);
    close(other);
    return fd;
}

SHIM_TEST(fd_reused_unseen)
{
    char line[4200];
    snprintf(line, sizeof(line), "path=%s/%s ", fx_model_dir(), fx_name(0));
    int audited = fx_log_count(fx_audit_log(), line);
    int fd = reused_unseen();
    CHECK(fx_reads_outside(fd));
    CHECK(close(fd) == 0);
    fd = reused_unseen();
    uint32_t w = fx_wanted();
    void *map = mmap(NULL, FX_OUTSIDE_SIZE, PROT_READ, MAP_PRIVATE, fd, 0);
    CHECK(map != MAP_FAILED && fx_bytes(FX_OUTSIDE_KEY, 0, map, FX_OUTSIDE_SIZE));
    if (map != MAP_FAILED)
        munmap(map, FX_OUTSIDE_SIZE);
    CHECK(fx_wanted() == w);
    CHECK(close(fd) == 0);
    CHECK(fx_log_count(fx_audit_log(), line) == audited);
}

int main(int argc, char **argv) { return fx_main(argc, argv); }
