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
#include <sys/sysmacros.h>
#include <unistd.h>

/* Names older headers lack (Debian 11: glibc 2.31, Linux 5.10), with the kernel's values. */
#if !defined(SYS_openat2) && defined(__NR_openat2)
#define SYS_openat2 __NR_openat2
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#include "huge_page.h"
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

/* The object an absolute path names by its plain spelling (session_lookup), or -1. Every
 * other spelling (relative, through "..", a symbolic link or a hard link) is recognized by
 * what it opens or stats: the placeholder's identity (session_identify). */
static int object_at(const char *path)
{
    return active() && path && path[0] == '/' ? session_lookup(path) : -1;
}

/* The object whose placeholder st describes, or whose data file when path (what was opened)
 * reached it some other way than by its own name (which only the owner uses); -1 if none. */
static int identify(const struct stat *st, const char *path)
{
    if (!active())
        return -1;
    int object = session_identify((uint64_t)st->st_dev, (uint64_t)st->st_ino, st->st_mode,
                                  (int64_t)st->st_size, (int64_t)st->st_blocks);
    return object >= 0 || !S_ISREG(st->st_mode)
               ? object
               : session_data_identify((uint64_t)st->st_dev, (uint64_t)st->st_ino, path);
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
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        real_close(fd);
        return fail(e);
    }
    session_opened_data(object, &st);
    if (fd >= FD_TABLE_SIZE) { /* untrackable: hand it out only once it is whole */
        int e = session_wait(object, 0, session_object_size(object), NULL);
        if (e) {
            real_close(fd);
            return fail(e);
        }
        return fd;
    }
    fd_track(fd, object, session_object_whole(object), &st); /* checked after the open */
    return fd;
}

/* After a real open that failed with EACCES: a placeholder is its owner's only (0600), so
 * another member of a shared session's group is refused it when object_at did not take the
 * spelling; a stat, which needs no access, still recognizes it. -1 (errno kept) if not. */
static int refused_object(int dirfd, const char *path, int flags)
{
    int e = errno;
    struct stat st;
    int object = e == EACCES && active() && path &&
                         real_fstatat(dirfd, path, &st,
                                      flags & O_NOFOLLOW ? AT_SYMLINK_NOFOLLOW : 0) == 0
                     ? identify(&st, path)
                     : -1;
    errno = e;
    return object;
}

/* After a real open, while the shim is active (one fstat). The kernel handed the number out,
 * so whatever we tracked on it was closed where no hook saw it: forgotten. A placeholder
 * reached by a spelling object_at does not take, or a data file of ours reached another way
 * (a reopen of our fd through /proc/self/fd), is swapped for an open of the object. */
static int opened(int fd, int dirfd, int flags, const char *path)
{
    if (fd < 0) {
        int refused = refused_object(dirfd, path, flags);
        return refused >= 0 ? open_object(refused, flags) : fd;
    }
    if (!active())
        return fd;
    fd_untrack(fd);
    struct stat st;
    int object =
        (flags & (O_PATH | O_DIRECTORY)) || fstat(fd, &st) != 0 ? -1 : identify(&st, path);
    if (object < 0)
        return fd;
    real_close(fd);
    return open_object(object, flags);
}

/* Whether an open with O_TRUNC would empty a placeholder (reached by a spelling object_at
 * does not take) or a data file before opened() could tell: one stat, for such opens only. */
static bool truncates_placeholder(int dirfd, const char *path, int flags)
{
    struct stat st;
    return (flags & O_TRUNC) && active() && path &&
           real_fstatat(dirfd, path, &st, flags & O_NOFOLLOW ? AT_SYMLINK_NOFOLLOW : 0) == 0 &&
           identify(&st, path) >= 0;
}

/* Whether fd still names the data file it was tracked on (forgotten if not). An fd can be
 * closed where no hook sees it (fclose of an fdopen'ed stream, a raw close) and its number
 * reused by a call we do not hook (socket, pipe, memfd_create). Asked only before a wait:
 * reads of present bytes, and of fds not ours, cost no system call. */
static bool still_ours(int fd)
{
    struct stat st;
    if (fstat(fd, &st) == 0 ? fd_is_file(fd, &st) : errno != EBADF)
        return true;
    fd_untrack(fd);
    return false;
}

static int wait_fd(int object, int fd, int64_t offset, uint64_t length)
{
    if (fd_whole(fd))
        return 0;
    if (offset < 0)
        offset = lseek(fd, 0, SEEK_CUR);
    if (offset < 0) /* the real call will report the problem */
        return 0;
    if (session_present(object, (uint64_t)offset, length) || !still_ours(fd))
        return 0;
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

#define OPEN_BODY(name, dirfd, path, flags, call_real) \
    ENSURE(name);                                      \
    int object = object_at(path);                      \
    if (object >= 0)                                   \
        return open_object(object, flags);             \
    if (truncates_placeholder(dirfd, path, flags))     \
        return fail(EROFS);                            \
    return opened(call_real, dirfd, flags, path)

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

/* After a real open of a stream, as opened() for its fd: the object whose placeholder it
 * reached, or -1. */
static int stream_opened(FILE *f, const char *path)
{
    if (!f || !active())
        return -1;
    int fd = fileno(f);
    fd_untrack(fd);
    struct stat st;
    return fstat(fd, &st) == 0 ? identify(&st, path) : -1;
}

/* "w" modes truncate (truncates_placeholder). */
static int stdio_flags(const char *mode) { return strchr(mode, 'w') ? O_TRUNC : 0; }

static FILE *fopen_common(const char *path, const char *mode,
                          FILE *(*real)(const char *, const char *))
{
    int object = object_at(path);
    if (object >= 0)
        return fopen_object(object, mode);
    if (truncates_placeholder(AT_FDCWD, path, stdio_flags(mode))) {
        errno = EROFS;
        return NULL;
    }
    FILE *f = real(path, mode);
    if (!f) {
        object = refused_object(AT_FDCWD, path, 0);
        return object >= 0 ? fopen_object(object, mode) : NULL;
    }
    object = stream_opened(f, path);
    if (object < 0)
        return f;
    fclose(f); /* the placeholder's: the object's stream instead */
    return fopen_object(object, mode);
}

SHIM_API FILE *fopen(const char *path, const char *mode)
{
    ENSURE(fopen);
    return fopen_common(path, mode, real_fopen);
}

SHIM_API FILE *fopen64(const char *path, const char *mode)
{
    ENSURE(fopen64);
    return fopen_common(path, mode, real_fopen64);
}

typedef FILE *(*freopen_fn)(const char *, const char *, FILE *);

/* A failed freopen has closed the stream, as glibc's does (the caller must not use it
 * again): the real call on a path that cannot be opened, then our errno. */
static FILE *freopen_failed(int e, const char *mode, FILE *stream, freopen_fn real)
{
    real("", mode, stream);
    errno = e;
    return NULL;
}

static FILE *freopen_object(int object, const char *mode, FILE *stream, freopen_fn real)
{
    if (strpbrk(mode, "wa+"))
        return freopen_failed(EROFS, mode, stream, real);
    /* Through an fd of ours, waited for whole, so the stream gets that very file (a path
     * could name a newer data file after an expiry, still being fetched). */
    int fd = open_object(object, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return freopen_failed(errno, mode, stream, real);
    int e = wait_fd(object, fd, 0, session_object_size(object));
    char self[64];
    snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
    FILE *f = e ? NULL : real(self, mode, stream); /* NULL: it closed the stream */
    int real_e = errno;
    fd_untrack(fd);
    real_close(fd);
    if (e)
        return freopen_failed(e, mode, stream, real);
    errno = real_e;
    return f;
}

static FILE *freopen_common(const char *path, const char *mode, FILE *stream, freopen_fn real)
{
    /* glibc closes the stream's fd inside, and gives its number to the new file. */
    if (path && stream)
        fd_untrack(fileno(stream));
    int object = object_at(path);
    if (object >= 0)
        return freopen_object(object, mode, stream, real);
    if (path && truncates_placeholder(AT_FDCWD, path, stdio_flags(mode)))
        return freopen_failed(EROFS, mode, stream, real);
    FILE *f = real(path, mode, stream);
    object = path ? stream_opened(f, path) : -1; /* NULL: the same file in another mode */
    return object < 0 ? f : freopen_object(object, mode, f, real);
}

SHIM_API FILE *freopen(const char *path, const char *mode, FILE *stream)
{
    ENSURE(freopen);
    return freopen_common(path, mode, stream, real_freopen);
}

SHIM_API FILE *freopen64(const char *path, const char *mode, FILE *stream)
{
    ENSURE(freopen64);
    return freopen_common(path, mode, stream, real_freopen64);
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
        int object = object_at(path);
        if (object >= 0)
            return open_object(object, flags);
        if (truncates_placeholder(dirfd, path, flags))
            return fail(EROFS);
        return opened((int)real_syscall(number, a[0], a[1], a[2], a[3], a[4], a[5]), dirfd,
                      flags, path);
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
 * Returns 0, or the errno the mapping fails with; *object is the object mapped, or -1. A
 * mapping placed over others (MAP_FIXED) ends their GPU registrations first (pin.c). */
static int wait_mapping(void *addr, int flags, int fd, int64_t offset, size_t length,
                        int *object)
{
    if (flags & MAP_FIXED)
        pin_forget(addr, length);
    *object = flags & MAP_ANONYMOUS ? -1 : fd_object(fd);
    return *object >= 0 ? wait_fd(*object, fd, offset, length) : 0;
}

/* After the real mmap: a shared mapping of an object's bytes, present now and for good, may
 * be registered with CUDA (OSSC_PIN_GPU=yes), up to the page holding the object's end. */
static void *mapped(void *p, size_t length, int flags, int object, int64_t offset)
{
    if (p == MAP_FAILED || object < 0 || !pin_enabled())
        return p;
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), size = session_object_size(object);
    uint64_t in_object = (uint64_t)offset < size ? size - (uint64_t)offset : 0;
    uint64_t n = (length < in_object ? length : in_object) + page - 1;
    pin_mapping(p, (size_t)(n - n % page), flags, object);
    return p;
}

/* The real mmap; a mapping of an object that the kernel may place goes where the data file's
 * huge pages map whole (huge_page.h): a reader touches its pages in a third of the time. */
static void *map_object(void *addr, size_t length, int prot, int flags, int fd, off_t offset,
                        int object)
{
    if (object < 0 || addr || (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE | MAP_32BIT)) ||
        length < OSSC_HUGE_PAGE)
        return real_mmap(addr, length, prot, flags, fd, offset);
    void *p = ossc_mmap_huge_aligned(real_mmap, real_munmap, length, prot, flags, fd, offset);
    return p != MAP_FAILED ? p : real_mmap(addr, length, prot, flags, fd, offset);
}

SHIM_API void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
{
    ENSURE(mmap);
    int object, e = wait_mapping(addr, flags, fd, (int64_t)offset, length, &object);
    return e ? (errno = e, MAP_FAILED)
             : mapped(map_object(addr, length, prot, flags, fd, offset, object), length, flags,
                      object, (int64_t)offset);
}

SHIM_API void *mmap64(void *addr, size_t length, int prot, int flags, int fd, off64_t offset)
{
    ENSURE(mmap64);
    int object, e = wait_mapping(addr, flags, fd, (int64_t)offset, length, &object);
    return e ? (errno = e, MAP_FAILED)
             : mapped(map_object(addr, length, prot, flags, fd, offset, object), length, flags,
                      object, (int64_t)offset);
}

/* The end of a mapping ends its GPU registration first: the driver would otherwise copy
 * from the old pages whatever is mapped at that address next. One load when none is. */
SHIM_API int munmap(void *addr, size_t length)
{
    ENSURE(munmap);
    pin_forget(addr, length);
    return real_munmap(addr, length);
}

SHIM_API void *mremap(void *old_address, size_t old_size, size_t new_size, int flags, ...)
{
    ENSURE(mremap);
    void *new_address = NULL;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        new_address = va_arg(ap, void *);
        va_end(ap);
        pin_forget(new_address, new_size); /* mapped over */
    }
    pin_forget(old_address, old_size);
    return real_mremap(old_address, old_size, new_size, flags, new_address);
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

/* A duplicate at a number beyond the table cannot be tracked: like open_object's fd there,
 * it is handed out only once the object is whole, so its reads need no wait. 0 or the
 * errno the dup fails with. */
static int whole_beyond_table(int from, int to)
{
    int object = to >= FD_TABLE_SIZE ? fd_object(from) : -1;
    return object >= 0 ? wait_fd(object, from, 0, session_object_size(object)) : 0;
}

/* After the real dup: to is what from is. */
static int dup_result(int from, int to)
{
    if (to < 0)
        return to;
    int e = whole_beyond_table(from, to);
    if (e) {
        real_close(to);
        return fail(e);
    }
    fd_copy(from, to);
    return to;
}

SHIM_API int dup(int fd)
{
    ENSURE(dup);
    return dup_result(fd, real_dup(fd));
}

/* dup2, dup3: the wait comes first, so that a failure leaves fd2 as it was. */
SHIM_API int dup2(int fd, int fd2)
{
    ENSURE(dup2);
    int e = whole_beyond_table(fd, fd2);
    return e ? fail(e) : dup_result(fd, real_dup2(fd, fd2));
}

SHIM_API int dup3(int fd, int fd2, int flags)
{
    ENSURE(dup3);
    int e = whole_beyond_table(fd, fd2);
    return e ? fail(e) : dup_result(fd, real_dup3(fd, fd2, flags));
}

static int fcntl_common(int (*real)(int, int, ...), int fd, int cmd, void *arg)
{
    if (cmd != F_DUPFD && cmd != F_DUPFD_CLOEXEC)
        return real(fd, cmd, arg);
    int e = whole_beyond_table(fd, (int)(intptr_t)arg); /* the least number it may take */
    return e ? fail(e) : dup_result(fd, real(fd, cmd, arg));
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
        struct stat st; /* not a number reused past our hooks (still_ours) */
        if (fstat(fd, &st) == 0 && fd_is_file(fd, &st))
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

/* A plain absolute spelling of an object: its data file's path, so that stat(path) and
 * fstat(fd) agree. Released (expireTimeSec): the placeholder tells the size without fetching
 * it again, so that `ls -l` after expiry does not download the model. */
static const char *stat_target(const char *path, char *buf)
{
    int object = object_at(path);
    if (object < 0)
        return path;
    session_data_path(object, buf, DATA_PATH_MAX);
    return access(buf, F_OK) == 0 ? buf : path;
}

/* After a real stat of a path stat_target left as it was: a placeholder reached by another
 * spelling is described by its data file too (the path to stat instead), else NULL. */
static const char *placeholder_target(uint64_t dev, uint64_t ino, mode_t mode, int64_t size,
                                      int64_t blocks, char *buf)
{
    int object = active() ? session_identify(dev, ino, mode, size, blocks) : -1;
    if (object < 0)
        return NULL;
    session_data_path(object, buf, DATA_PATH_MAX);
    return access(buf, F_OK) == 0 ? buf : NULL;
}

#define STAT_IDS(st)                                                                     \
    (uint64_t)(st)->st_dev, (uint64_t)(st)->st_ino, (st)->st_mode, (int64_t)(st)->st_size, \
        (int64_t)(st)->st_blocks
/* statx without the type or the inode number identifies nothing. */
#define STATX_IDS(st)                                                                    \
    (uint64_t)makedev((st)->stx_dev_major, (st)->stx_dev_minor), (uint64_t)(st)->stx_ino,  \
        ((st)->stx_mask & (STATX_TYPE | STATX_INO)) == (STATX_TYPE | STATX_INO)           \
            ? (mode_t)(st)->stx_mode                                                     \
            : 0,                                                                         \
        (int64_t)(st)->stx_size,                                                         \
        (st)->stx_mask & STATX_BLOCKS ? (int64_t)(st)->stx_blocks : 0

/* The shape of every stat hook: `call` stats the path target_. */
#define STAT_BODY(name, ids, call)                                                 \
    ENSURE(name);                                                                  \
    char buf_[DATA_PATH_MAX];                                                      \
    const char *target_ = stat_target(path, buf_);                                 \
    int r_ = call;                                                                 \
    if (r_ == 0 && target_ == path && (target_ = placeholder_target(ids, buf_))) \
        r_ = call;                                                                 \
    return r_

SHIM_API int stat(const char *path, struct stat *st)
{
    STAT_BODY(stat, STAT_IDS(st), real_stat(target_, st));
}

SHIM_API int stat64(const char *path, struct stat64 *st)
{
    STAT_BODY(stat64, STAT_IDS(st), real_stat64(target_, st));
}

SHIM_API int lstat(const char *path, struct stat *st)
{
    STAT_BODY(lstat, STAT_IDS(st), real_lstat(target_, st));
}

SHIM_API int lstat64(const char *path, struct stat64 *st)
{
    STAT_BODY(lstat64, STAT_IDS(st), real_lstat64(target_, st));
}

SHIM_API int fstatat(int dirfd, const char *path, struct stat *st, int flags)
{
    STAT_BODY(fstatat, STAT_IDS(st), real_fstatat(dirfd, target_, st, flags));
}

SHIM_API int fstatat64(int dirfd, const char *path, struct stat64 *st, int flags)
{
    STAT_BODY(fstatat64, STAT_IDS(st), real_fstatat64(dirfd, target_, st, flags));
}

SHIM_API int __xstat(int ver, const char *path, struct stat *st)
{
    STAT_BODY(__xstat, STAT_IDS(st), real___xstat(ver, target_, st));
}

SHIM_API int __xstat64(int ver, const char *path, struct stat64 *st)
{
    STAT_BODY(__xstat64, STAT_IDS(st), real___xstat64(ver, target_, st));
}

SHIM_API int __lxstat(int ver, const char *path, struct stat *st)
{
    STAT_BODY(__lxstat, STAT_IDS(st), real___lxstat(ver, target_, st));
}

SHIM_API int __lxstat64(int ver, const char *path, struct stat64 *st)
{
    STAT_BODY(__lxstat64, STAT_IDS(st), real___lxstat64(ver, target_, st));
}

SHIM_API int __fxstatat(int ver, int dirfd, const char *path, struct stat *st, int flags)
{
    STAT_BODY(__fxstatat, STAT_IDS(st), real___fxstatat(ver, dirfd, target_, st, flags));
}

SHIM_API int __fxstatat64(int ver, int dirfd, const char *path, struct stat64 *st, int flags)
{
    STAT_BODY(__fxstatat64, STAT_IDS(st), real___fxstatat64(ver, dirfd, target_, st, flags));
}

SHIM_API int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *st)
{
    STAT_BODY(statx, STATX_IDS(st), real_statx(dirfd, target_, flags, mask, st));
}
