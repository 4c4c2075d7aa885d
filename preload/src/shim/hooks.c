/* hooks.c: the interposed functions (the list is hooks.def). Each has the same shape: make
 * sure the real function is known; if the path or fd is not ours, call it and return; else
 * redirect the open to the object's data file, or wait until the bytes a read needs are
 * present. The not-ours path costs a prefix compare or one fd-table load. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shim.h"

#define DATA_PATH_MAX 1100 /* the session's data_dir and an index */

/* Resolves the table on the first call that finds it empty (a hook called before our
 * constructor ran), once: a symbol still missing after that stays missing. */
#define ENSURE(name)                                                              \
    do {                                                                          \
        if (!real_##name && !__atomic_load_n(&real_resolved, __ATOMIC_ACQUIRE)) \
            real_resolve();                                                       \
    } while (0)

static inline bool active(void) { return shim_ready == 2 && shim.enabled; }

/* An absolute spelling of path (relative to dirfd) if it may lie below MODEL_DIR, else NULL. */
static const char *absolute(int dirfd, const char *path, char *buf, size_t cap)
{
    if (!path)
        return NULL;
    if (path[0] == '/')
        return path;
    char base[PATH_MAX];
    if (dirfd == AT_FDCWD) {
        if (!getcwd(base, sizeof(base)))
            return NULL;
    } else {
        char link[64];
        snprintf(link, sizeof(link), "/proc/self/fd/%d", dirfd);
        ssize_t n = readlink(link, base, sizeof(base) - 1);
        if (n <= 0)
            return NULL;
        base[n] = '\0';
    }
    if ((size_t)snprintf(buf, cap, "%s/%s", base, path) >= cap)
        return NULL;
    return buf;
}

/* The object a path names, or -1; relative paths only cost a getcwd when the shim is on. */
static int object_at(int dirfd, const char *path)
{
    if (!active() || !path || !*path) /* "" with AT_EMPTY_PATH names dirfd itself */
        return -1;
    char buf[PATH_MAX + 64];
    const char *abs = absolute(dirfd, path, buf, sizeof(buf));
    return abs ? session_lookup(abs) : -1;
}

static int fail(int e)
{
    errno = e;
    return -1;
}

/* Opens an object's data file in place of its placeholder. */
static int open_object(int object, int flags)
{
    if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC))
        return fail(EROFS); /* the bytes are the store's */
    if (flags & O_DIRECTORY)
        return fail(ENOTDIR); /* a file, as its placeholder is */
    int fd = session_open_data(object, flags);
    if (fd < 0)
        return -1;
    if (fd >= FD_TABLE_SIZE) { /* untrackable: hand it out only once it is whole */
        int e = session_wait(object, 0, session_object_size(object), NULL);
        if (e) {
            real_close(fd);
            return fail(e);
        }
        return fd;
    }
    fd_track(fd, object, session_object_whole(object)); /* checked after the open */
    return fd;
}

static int wait_fd(int object, int fd, int64_t offset, uint64_t length)
{
    if (fd_whole(fd))
        return 0;
    if (offset < 0)
        offset = lseek(fd, 0, SEEK_CUR);
    if (offset < 0)
        return 0; /* the real call will report the problem */
    uint32_t waited = 0;
    int e = session_wait(object, (uint64_t)offset, length, &waited);
    fd_add_wait(fd, waited);
    return e;
}

static uint64_t iov_length(const struct iovec *iov, int n)
{
    uint64_t total = 0;
    for (int i = 0; i < n; i++)
        total += iov[i].iov_len;
    return total;
}

static mode_t mode_arg(int flags, va_list ap)
{
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

/* ---- the open family ---- */

#define OPEN_BODY(name, dirfd, path, flags, call_real)     \
    ENSURE(name);                                          \
    int object = object_at(dirfd, path);                   \
    if (object < 0)                                        \
        return call_real;                                  \
    return open_object(object, flags)

SHIM_API int open(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    OPEN_BODY(open, AT_FDCWD, path, flags, real_open(path, flags, mode));
}

SHIM_API int open64(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    OPEN_BODY(open64, AT_FDCWD, path, flags, real_open64(path, flags, mode));
}

SHIM_API int __open_2(const char *path, int flags)
{
    OPEN_BODY(__open_2, AT_FDCWD, path, flags, real___open_2(path, flags));
}

SHIM_API int __open64_2(const char *path, int flags)
{
    OPEN_BODY(__open64_2, AT_FDCWD, path, flags, real___open64_2(path, flags));
}

SHIM_API int openat(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    OPEN_BODY(openat, dirfd, path, flags, real_openat(dirfd, path, flags, mode));
}

SHIM_API int openat64(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    OPEN_BODY(openat64, dirfd, path, flags, real_openat64(dirfd, path, flags, mode));
}

SHIM_API int __openat_2(int dirfd, const char *path, int flags)
{
    OPEN_BODY(__openat_2, dirfd, path, flags, real___openat_2(dirfd, path, flags));
}

SHIM_API int __openat64_2(int dirfd, const char *path, int flags)
{
    OPEN_BODY(__openat64_2, dirfd, path, flags, real___openat64_2(dirfd, path, flags));
}

/* stdio reads inside libc, past every hook: a stream gets the object once it is whole. */
static FILE *fopen_object(int object, const char *mode)
{
    if (strpbrk(mode, "wa+")) {
        errno = EROFS;
        return NULL;
    }
    int fd = open_object(object, O_RDONLY | (strchr(mode, 'e') ? O_CLOEXEC : 0));
    if (fd < 0)
        return NULL;
    uint32_t waited = 0;
    int e = session_wait(object, 0, session_object_size(object), &waited);
    /* fclose closes inside libc, past our close: forget the fd now (the object is whole, no
     * read on it needs a wait), so a later file that gets its number is not taken for ours. */
    fd_untrack(fd);
    FILE *f = e ? NULL : fdopen(fd, mode);
    if (!f) {
        real_close(fd);
        errno = e ? e : errno;
    } else {
        session_audit(object, waited);
    }
    return f;
}

SHIM_API FILE *fopen(const char *path, const char *mode)
{
    ENSURE(fopen);
    int object = object_at(AT_FDCWD, path);
    return object < 0 ? real_fopen(path, mode) : fopen_object(object, mode);
}

SHIM_API FILE *fopen64(const char *path, const char *mode)
{
    ENSURE(fopen64);
    int object = object_at(AT_FDCWD, path);
    return object < 0 ? real_fopen64(path, mode) : fopen_object(object, mode);
}

static FILE *freopen_object(int object, const char *mode, FILE *stream,
                            FILE *(*real)(const char *, const char *, FILE *))
{
    if (strpbrk(mode, "wa+")) {
        errno = EROFS;
        return NULL;
    }
    /* Through an fd of ours, waited for whole, so the stream gets that very file (a path
     * could name a newer data file after an expiry, still being fetched). */
    int fd = open_object(object, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    int e = wait_fd(object, fd, 0, session_object_size(object));
    FILE *f = NULL;
    if (!e) {
        char self[64];
        snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
        f = real(self, mode, stream);
        e = f ? 0 : errno;
    }
    fd_untrack(fd);
    real_close(fd);
    errno = f ? errno : e;
    return f;
}

SHIM_API FILE *freopen(const char *path, const char *mode, FILE *stream)
{
    ENSURE(freopen);
    int object = object_at(AT_FDCWD, path);
    return object < 0 ? real_freopen(path, mode, stream)
                      : freopen_object(object, mode, stream, real_freopen);
}

SHIM_API FILE *freopen64(const char *path, const char *mode, FILE *stream)
{
    ENSURE(freopen64);
    int object = object_at(AT_FDCWD, path);
    return object < 0 ? real_freopen64(path, mode, stream)
                      : freopen_object(object, mode, stream, real_freopen64);
}

/* Only the open syscalls are ours (glibc has no openat2 wrapper: callers use syscall());
 * every other number passes six arguments on. */
SHIM_API long syscall(long number, ...)
{
    ENSURE(syscall);
    va_list ap;
    va_start(ap, number);
    long a[6];
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    if (active() && (number == SYS_open || number == SYS_openat || number == SYS_openat2)) {
        int dirfd = number == SYS_open ? AT_FDCWD : (int)a[0];
        const char *path = (const char *)(number == SYS_open ? a[0] : a[1]);
        int flags = number == SYS_open     ? (int)a[1]
                    : number == SYS_openat ? (int)a[2]
                    : a[2] ? (int)((const struct open_how *)a[2])->flags : 0;
        int object = object_at(dirfd, path);
        if (object >= 0)
            return open_object(object, flags);
    }
    return real_syscall(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}

/* ---- reads: wait for the bytes, then the real call on the real fd ---- */

#define WAIT_OR_FAIL(fd, offset, length)                          \
    do {                                                          \
        int object_ = fd_object(fd);                              \
        if (object_ >= 0) {                                       \
            int e_ = wait_fd(object_, fd, offset, length);        \
            if (e_)                                               \
                return fail(e_);                                  \
        }                                                         \
    } while (0)

SHIM_API ssize_t read(int fd, void *buf, size_t count)
{
    ENSURE(read);
    WAIT_OR_FAIL(fd, -1, count);
    return real_read(fd, buf, count);
}

SHIM_API ssize_t pread(int fd, void *buf, size_t count, off_t offset)
{
    ENSURE(pread);
    WAIT_OR_FAIL(fd, offset, count);
    return real_pread(fd, buf, count, offset);
}

SHIM_API ssize_t pread64(int fd, void *buf, size_t count, off64_t offset)
{
    ENSURE(pread64);
    WAIT_OR_FAIL(fd, offset, count);
    return real_pread64(fd, buf, count, offset);
}

SHIM_API ssize_t readv(int fd, const struct iovec *iov, int iovcnt)
{
    ENSURE(readv);
    WAIT_OR_FAIL(fd, -1, iov_length(iov, iovcnt));
    return real_readv(fd, iov, iovcnt);
}

SHIM_API ssize_t preadv(int fd, const struct iovec *iov, int iovcnt, off_t offset)
{
    ENSURE(preadv);
    WAIT_OR_FAIL(fd, offset, iov_length(iov, iovcnt));
    return real_preadv(fd, iov, iovcnt, offset);
}

SHIM_API ssize_t preadv64(int fd, const struct iovec *iov, int iovcnt, off64_t offset)
{
    ENSURE(preadv64);
    WAIT_OR_FAIL(fd, offset, iov_length(iov, iovcnt));
    return real_preadv64(fd, iov, iovcnt, offset);
}

SHIM_API ssize_t preadv2(int fd, const struct iovec *iov, int iovcnt, off_t offset, int flags)
{
    ENSURE(preadv2);
    WAIT_OR_FAIL(fd, offset, iov_length(iov, iovcnt)); /* offset -1: the file offset */
    return real_preadv2 ? real_preadv2(fd, iov, iovcnt, offset, flags) : fail(ENOSYS);
}

SHIM_API ssize_t preadv64v2(int fd, const struct iovec *iov, int iovcnt, off64_t offset,
                            int flags)
{
    ENSURE(preadv64v2);
    WAIT_OR_FAIL(fd, offset, iov_length(iov, iovcnt));
    return real_preadv64v2 ? real_preadv64v2(fd, iov, iovcnt, offset, flags) : fail(ENOSYS);
}

/* A mapping is served by page faults no hook sees: the mapped range must be whole first.
 * Returns 0, or the errno the mapping fails with. */
static int wait_mapping(int flags, int fd, int64_t offset, size_t length)
{
    int object = flags & MAP_ANONYMOUS ? -1 : fd_object(fd);
    return object >= 0 ? wait_fd(object, fd, offset, length) : 0;
}

SHIM_API void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
{
    ENSURE(mmap);
    int e = wait_mapping(flags, fd, (int64_t)offset, length);
    return e ? (errno = e, MAP_FAILED) : real_mmap(addr, length, prot, flags, fd, offset);
}

SHIM_API void *mmap64(void *addr, size_t length, int prot, int flags, int fd, off64_t offset)
{
    ENSURE(mmap64);
    int e = wait_mapping(flags, fd, (int64_t)offset, length);
    return e ? (errno = e, MAP_FAILED) : real_mmap64(addr, length, prot, flags, fd, offset);
}

SHIM_API ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t count)
{
    ENSURE(sendfile);
    WAIT_OR_FAIL(in_fd, offset ? *offset : -1, count);
    return real_sendfile(out_fd, in_fd, offset, count);
}

SHIM_API ssize_t sendfile64(int out_fd, int in_fd, off64_t *offset, size_t count)
{
    ENSURE(sendfile64);
    WAIT_OR_FAIL(in_fd, offset ? *offset : -1, count);
    return real_sendfile64(out_fd, in_fd, offset, count);
}

SHIM_API ssize_t copy_file_range(int fd_in, off64_t *off_in, int fd_out, off64_t *off_out,
                                 size_t len, unsigned int flags)
{
    ENSURE(copy_file_range);
    WAIT_OR_FAIL(fd_in, off_in ? *off_in : -1, len);
    return real_copy_file_range(fd_in, off_in, fd_out, off_out, len, flags);
}

/* ---- fd bookkeeping: a duplicate is ours too; a closed fd no longer is ---- */

static int track_dup(int from, int to)
{
    if (to >= 0) {
        int object = fd_object(from);
        if (object >= 0)
            fd_track(to, object, fd_whole(from));
        else
            fd_untrack(to);
    }
    return to;
}

SHIM_API int dup(int fd)
{
    ENSURE(dup);
    return track_dup(fd, real_dup(fd));
}

SHIM_API int dup2(int fd, int fd2)
{
    ENSURE(dup2);
    return track_dup(fd, real_dup2(fd, fd2));
}

SHIM_API int dup3(int fd, int fd2, int flags)
{
    ENSURE(dup3);
    return track_dup(fd, real_dup3(fd, fd2, flags));
}

static int fcntl_common(int (*real)(int, int, ...), int fd, int cmd, void *arg)
{
    int r = real(fd, cmd, arg);
    if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)
        track_dup(fd, r);
    return r;
}

SHIM_API int fcntl(int fd, int cmd, ...)
{
    ENSURE(fcntl);
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *); /* every fcntl argument fits a pointer */
    va_end(ap);
    return fcntl_common(real_fcntl, fd, cmd, arg);
}

SHIM_API int fcntl64(int fd, int cmd, ...)
{
    ENSURE(fcntl64);
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    return fcntl_common(real_fcntl64 ? real_fcntl64 : real_fcntl, fd, cmd, arg);
}

SHIM_API int close(int fd)
{
    ENSURE(close);
    int object = fd_object(fd);
    if (object >= 0) {
        session_audit(object, fd_waited_ms(fd));
        fd_untrack(fd);
    }
    return real_close(fd);
}

SHIM_API int close_range(unsigned int first, unsigned int last, int flags)
{
    ENSURE(close_range);
    int r = real_close_range ? real_close_range(first, last, flags) : fail(ENOSYS);
    if (r == 0 && !(flags & CLOSE_RANGE_CLOEXEC))
        fd_untrack_range(first, last);
    return r;
}

/* ---- stat: a path of ours describes its data file, so that stat(path) and fstat(fd) agree
 * (cp checks that the file it opened is the one it stat'ed) ---- */

static const char *stat_target(int dirfd, const char *path, char *buf)
{
    int object = object_at(dirfd, path);
    if (object < 0)
        return path;
    session_data_path(object, buf, DATA_PATH_MAX);
    /* Released (expireTimeSec): the placeholder tells the size without fetching it again,
     * so that `ls -l` after expiry does not download the model. */
    return access(buf, F_OK) == 0 ? buf : path;
}

SHIM_API int stat(const char *path, struct stat *st)
{
    ENSURE(stat);
    char buf[DATA_PATH_MAX];
    return real_stat(stat_target(AT_FDCWD, path, buf), st);
}

SHIM_API int stat64(const char *path, struct stat64 *st)
{
    ENSURE(stat64);
    char buf[DATA_PATH_MAX];
    return real_stat64(stat_target(AT_FDCWD, path, buf), st);
}

SHIM_API int lstat(const char *path, struct stat *st)
{
    ENSURE(lstat);
    char buf[DATA_PATH_MAX];
    return real_lstat(stat_target(AT_FDCWD, path, buf), st);
}

SHIM_API int lstat64(const char *path, struct stat64 *st)
{
    ENSURE(lstat64);
    char buf[DATA_PATH_MAX];
    return real_lstat64(stat_target(AT_FDCWD, path, buf), st);
}

SHIM_API int fstatat(int dirfd, const char *path, struct stat *st, int flags)
{
    ENSURE(fstatat);
    char buf[DATA_PATH_MAX];
    return real_fstatat(dirfd, stat_target(dirfd, path, buf), st, flags);
}

SHIM_API int fstatat64(int dirfd, const char *path, struct stat64 *st, int flags)
{
    ENSURE(fstatat64);
    char buf[DATA_PATH_MAX];
    return real_fstatat64(dirfd, stat_target(dirfd, path, buf), st, flags);
}

SHIM_API int __xstat(int ver, const char *path, struct stat *st)
{
    ENSURE(__xstat);
    char buf[DATA_PATH_MAX];
    return real___xstat(ver, stat_target(AT_FDCWD, path, buf), st);
}

SHIM_API int __xstat64(int ver, const char *path, struct stat64 *st)
{
    ENSURE(__xstat64);
    char buf[DATA_PATH_MAX];
    return real___xstat64(ver, stat_target(AT_FDCWD, path, buf), st);
}

SHIM_API int __lxstat(int ver, const char *path, struct stat *st)
{
    ENSURE(__lxstat);
    char buf[DATA_PATH_MAX];
    return real___lxstat(ver, stat_target(AT_FDCWD, path, buf), st);
}

SHIM_API int __lxstat64(int ver, const char *path, struct stat64 *st)
{
    ENSURE(__lxstat64);
    char buf[DATA_PATH_MAX];
    return real___lxstat64(ver, stat_target(AT_FDCWD, path, buf), st);
}

SHIM_API int __fxstatat(int ver, int dirfd, const char *path, struct stat *st, int flags)
{
    ENSURE(__fxstatat);
    char buf[DATA_PATH_MAX];
    return real___fxstatat(ver, dirfd, stat_target(dirfd, path, buf), st, flags);
}

SHIM_API int __fxstatat64(int ver, int dirfd, const char *path, struct stat64 *st, int flags)
{
    ENSURE(__fxstatat64);
    char buf[DATA_PATH_MAX];
    return real___fxstatat64(ver, dirfd, stat_target(dirfd, path, buf), st, flags);
}

SHIM_API int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *st)
{
    ENSURE(statx);
    char buf[DATA_PATH_MAX];
    return real_statx(dirfd, stat_target(dirfd, path, buf), flags, mask, st);
}
