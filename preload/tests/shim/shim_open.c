/* shim_open.c: open, open64, __open_2, __open64_2, openat, openat64, __openat_2, __openat64_2
 * and syscall(SYS_open, SYS_openat, SYS_openat2). A large object's path, however spelled,
 * opens its data file read-only, and reads through that fd wait; an open whose data file is
 * released waits for the object's first chunk, or fails with the object's errno; opening it
 * for writing or with O_TRUNC fails with EROFS; anything else is the real open. */
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fixture.h"

/* glibc's fortify targets: exported, not declared without _FORTIFY_SOURCE. */
extern int __open_2(const char *path, int flags);
extern int __open64_2(const char *path, int flags);
extern int __openat_2(int dirfd, const char *path, int flags);
extern int __openat64_2(int dirfd, const char *path, int flags);

typedef struct opener {
    int (*fn)(int dirfd, const char *path, int flags); /* dirfd is AT_FDCWD unless `at` */
    bool at;       /* takes a directory fd */
    bool creates;  /* may be given O_CREAT (the _2 forms abort on it) */
} opener;

static int mode_for(int flags) { return flags & O_CREAT ? 0644 : 0; }

static int by_open(int d, const char *p, int f) { (void)d; return open(p, f, mode_for(f)); }
static int by_open64(int d, const char *p, int f) { (void)d; return open64(p, f, mode_for(f)); }
static int by___open_2(int d, const char *p, int f) { (void)d; return __open_2(p, f); }
static int by___open64_2(int d, const char *p, int f) { (void)d; return __open64_2(p, f); }
static int by_openat(int d, const char *p, int f) { return openat(d, p, f, mode_for(f)); }
static int by_openat64(int d, const char *p, int f) { return openat64(d, p, f, mode_for(f)); }
static int by___openat_2(int d, const char *p, int f) { return __openat_2(d, p, f); }
static int by___openat64_2(int d, const char *p, int f) { return __openat64_2(d, p, f); }

#ifdef SYS_open
static int by_sys_open(int d, const char *p, int f)
{
    (void)d;
    return (int)syscall(SYS_open, p, f, mode_for(f));
}
#endif

static int by_sys_openat(int d, const char *p, int f)
{
    return (int)syscall(SYS_openat, d, p, f, mode_for(f));
}

static int by_sys_openat2(int d, const char *p, int f)
{
    struct open_how how = {.flags = (uint64_t)f, .mode = (uint64_t)mode_for(f)};
    return (int)syscall(SYS_openat2, d, p, &how, sizeof(how));
}

/* An open that runs in a thread: c->ctx the opener, c->path, c->flags. */
static long call_open(fx_call *c)
{
    const opener *o = c->ctx;
    return o->fn(AT_FDCWD, c->path, c->flags);
}

/* fd is object k's: its data file, read-only, and a read of a missing chunk waits for it. */
static void check_ours(int fd, int k)
{
    CHECK(fd >= 0);
    CHECK(fx_same_file(fx_id_of_fd(fd), fx_id_of_path(fx_data_path(k))));
    CHECK((fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDONLY);
    CHECK(fx_fd_waits(fd, k, fx_chunks(k) - 1));
}

/* fd passes through: the file at path (the outside file's pattern), read without a request. */
static void check_real(int fd, const char *path)
{
    CHECK(fd >= 0);
    CHECK(fx_same_file(fx_id_of_fd(fd), fx_id_of_path(path)));
    CHECK(fx_reads_outside(fd));
}

static void check_opener(const opener *o, int error)
{
    /* Object 0 by its path: its data file. With O_CLOEXEC kept. */
    fx_reset();
    int fd = o->fn(AT_FDCWD, fx_path(0), O_RDONLY | O_CLOEXEC);
    check_ours(fd, 0);
    CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    close(fd);
    fd = o->fn(AT_FDCWD, fx_path(2), O_RDONLY);
    check_ours(fd, 2);
    CHECK(!(fcntl(fd, F_GETFD) & FD_CLOEXEC));
    close(fd);

    /* Every spelling: "//", "/./", "x/..", relative to the current directory or a dirfd. */
    char path[4200];
    snprintf(path, sizeof(path), "%s/./sub//dir/../dir/weights.bin", fx_model_dir());
    fx_reset();
    fd = o->fn(AT_FDCWD, path, O_RDONLY);
    check_ours(fd, 1);
    close(fd);
    fx_reset();
    int dir = open(fx_model_dir(), O_RDONLY | O_DIRECTORY);
    CHECK(dir >= 0 && fchdir(dir) == 0);
    fd = o->fn(AT_FDCWD, "sub/dir/weights.bin", O_RDONLY);
    check_ours(fd, 1);
    close(fd);
    if (o->at) {
        fx_reset();
        int sub = openat(dir, "sub", O_RDONLY | O_DIRECTORY);
        fd = o->fn(sub, "dir/weights.bin", O_RDONLY);
        check_ours(fd, 1);
        close(fd);
        close(sub);
        fx_reset();
        fd = o->fn(dir, "sub/../model-00001-of-00002.safetensors", O_RDONLY);
        check_ours(fd, 0);
        close(fd);
    }
    close(dir);

    /* A released object: the open waits for its first chunk, then opens the new file. */
    fx_reset();
    fx_release(1);
    fx_call c = {.fn = call_open, .ctx = o, .path = fx_path(1), .flags = O_RDONLY};
    fx_start(&c);
    CHECK(fx_asks(&c, 1, 0));
    fx_land(1, 0);
    fd = (int)fx_finish(&c);
    CHECK(fd >= 0);
    CHECK(fx_same_file(fx_id_of_fd(fd), fx_id_of_path(fx_data_path(1))));
    unsigned char buf[16];
    CHECK(pread(fd, buf, sizeof(buf), 0) == (ssize_t)sizeof(buf) && fx_bytes(1, 0, buf, 16));
    close(fd);

    /* ... or fails with the object's errno: recorded while it waits, or before. */
    fx_reset();
    fx_release(1);
    c = (fx_call){.fn = call_open, .ctx = o, .path = fx_path(1), .flags = O_RDONLY};
    fx_start(&c);
    CHECK(fx_asks(&c, 1, 0));
    fx_fail(1, error);
    CHECK(fx_finish(&c) == -1 && errno == error);
    /* Failed before: the open asks the owner once to fetch it again, and fails with the
     * errno when that does not happen (the fixture answers nothing). */
    fx_fail(1, EACCES);
    uint32_t asked = fx_wanted();
    fx_expect_waits(true);
    CHECK_ERRNO(o->fn(AT_FDCWD, fx_path(1), O_RDONLY), EACCES);
    fx_expect_waits(false);
    CHECK(fx_wanted() != asked);

    /* Writing, or truncating: EROFS, and the placeholder and data file stay as they are. */
    fx_reset();
    CHECK_ERRNO(o->fn(AT_FDCWD, fx_path(0), O_WRONLY), EROFS);
    CHECK_ERRNO(o->fn(AT_FDCWD, fx_path(0), O_RDWR), EROFS);
    CHECK_ERRNO(o->fn(AT_FDCWD, fx_path(0), O_RDONLY | O_TRUNC), EROFS);
    if (o->creates)
        CHECK_ERRNO(o->fn(AT_FDCWD, fx_path(0), O_WRONLY | O_CREAT | O_TRUNC), EROFS);
    fx_release(2);
    CHECK_ERRNO(o->fn(AT_FDCWD, fx_path(2), O_RDWR), EROFS); /* at once, no fetch */
    /* A file, like its placeholder: not a directory. */
    CHECK_ERRNO(o->fn(AT_FDCWD, fx_path(0), O_RDONLY | O_DIRECTORY), ENOTDIR);
    CHECK(fx_id_of_path(fx_data_path(0)).size == fx_size(0));
    CHECK(fx_placeholder(0).size == fx_size(0));

    /* Outside MODEL_DIR, beside it, small files and directories in it: the real open. */
    uint32_t w = fx_wanted();
    fd = o->fn(AT_FDCWD, fx_outside(), O_RDONLY);
    check_real(fd, fx_outside());
    close(fd);
    fd = o->fn(AT_FDCWD, fx_sibling(), O_RDONLY);
    check_real(fd, fx_sibling());
    close(fd);
    fd = o->fn(AT_FDCWD, fx_small(), O_RDONLY);
    CHECK(fd >= 0 && fx_same_file(fx_id_of_fd(fd), fx_small_id()));
    close(fd);
    fd = o->fn(AT_FDCWD, fx_small(), O_RDWR); /* small files are real files: writable */
    CHECK(fd >= 0);
    close(fd);
    fd = o->fn(AT_FDCWD, fx_model_dir(), O_RDONLY | O_DIRECTORY);
    CHECK(fd >= 0 && S_ISDIR(fx_id_of_fd(fd).mode));
    close(fd);
    snprintf(path, sizeof(path), "%s/no-such-file", fx_model_dir());
    CHECK_ERRNO(o->fn(AT_FDCWD, path, O_RDONLY), ENOENT);
    if (o->creates) {
        snprintf(path, sizeof(path), "%s/made-by-the-test", fx_model_dir());
        fd = o->fn(AT_FDCWD, path, O_WRONLY | O_CREAT | O_EXCL);
        CHECK(fd >= 0);
        close(fd);
        CHECK(unlink(path) == 0);
    }
    CHECK_ERRNO(o->fn(AT_FDCWD, "", O_RDONLY), ENOENT);
    CHECK(fx_wanted() == w);
}

SHIM_TEST(open) { check_opener(&(opener){by_open, false, true}, EACCES); }
SHIM_TEST(open64) { check_opener(&(opener){by_open64, false, true}, ENOENT); }
SHIM_TEST(__open_2) { check_opener(&(opener){by___open_2, false, false}, EIO); }
SHIM_TEST(__open64_2) { check_opener(&(opener){by___open64_2, false, false}, EACCES); }
SHIM_TEST(openat) { check_opener(&(opener){by_openat, true, true}, ENOENT); }
SHIM_TEST(openat64) { check_opener(&(opener){by_openat64, true, true}, EIO); }
SHIM_TEST(__openat_2) { check_opener(&(opener){by___openat_2, true, false}, EACCES); }
SHIM_TEST(__openat64_2) { check_opener(&(opener){by___openat64_2, true, false}, ENOENT); }

SHIM_TEST(syscall)
{
#ifdef SYS_open
    check_opener(&(opener){by_sys_open, false, true}, EIO);
#else
    fx_skip("SYS_open: this architecture has no open system call");
#endif
    check_opener(&(opener){by_sys_openat, true, true}, EACCES);
    errno = 0;
    long probe = syscall(SYS_openat2, AT_FDCWD, "/", &(struct open_how){.flags = O_RDONLY},
                         sizeof(struct open_how));
    if (probe >= 0) {
        close((int)probe);
        check_opener(&(opener){by_sys_openat2, true, true}, ENOENT);
    } else {
        fx_skip("SYS_openat2: this kernel has no openat2");
    }
    /* Every other number passes its six arguments through. */
    CHECK(syscall(SYS_getpid) == getpid());
    int fd = open(fx_path(0), O_RDONLY);
    CHECK(syscall(SYS_fcntl, fd, F_GETFD) == fcntl(fd, F_GETFD));
    CHECK(syscall(SYS_lseek, fd, 5, SEEK_SET) == 5);
    close(fd);
    CHECK(syscall(-1) == -1 && errno == ENOSYS);
}

/* A path that reaches MODEL_DIR through ".." is the object's too (the placeholder would
 * read as zeros): from a sibling directory, and leaving MODEL_DIR and coming back. */
SHIM_TEST(dotdot)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/elsewhere", fx_base());
    CHECK(mkdir(path, 0755) == 0 && chdir(path) == 0);
    snprintf(path, sizeof(path), "../model/%s", fx_name(0));
    int fd = open(path, O_RDONLY);
    check_ours(fd, 0);
    close(fd);
    snprintf(path, sizeof(path), "%s/sub/../../model/%s", fx_model_dir(), fx_name(1));
    fd = open(path, O_RDONLY);
    check_ours(fd, 1);
    close(fd);
    snprintf(path, sizeof(path), "%s/model2/../model/%s", fx_base(), fx_name(2));
    fd = open(path, O_RDONLY);
    check_ours(fd, 2);
    close(fd);
    /* Relative to a directory fd inside MODEL_DIR, up and down again. */
    snprintf(path, sizeof(path), "%s/sub/dir", fx_model_dir());
    int dir = open(path, O_RDONLY | O_DIRECTORY);
    snprintf(path, sizeof(path), "../../%s", fx_name(0));
    fx_reset();
    fd = openat(dir, path, O_RDONLY);
    check_ours(fd, 0);
    close(fd);
    /* Writing through such a spelling: EROFS, the placeholder as it was. */
    CHECK_ERRNO(openat(dir, path, O_WRONLY), EROFS);
    CHECK_ERRNO(openat(dir, path, O_WRONLY | O_TRUNC), EROFS);
    CHECK(fx_id_of_path(fx_path(0)).size == fx_size(0));
    close(dir);
}

/* Whether a stream fopen'ed at path reads object k (landed whole first: fopen waits for it). */
static bool fopen_reads(const char *path, int k)
{
    fx_land_all(k);
    FILE *f = fopen(path, "rb");
    unsigned char buf[100];
    bool ok = f && fread(buf, 1, sizeof(buf), f) == sizeof(buf) && fx_bytes(k, 0, buf, sizeof(buf));
    if (f)
        fclose(f);
    return ok;
}

/* A symbolic link into MODEL_DIR (to the object, to a directory above it), outside or
 * inside, and a hard link to a placeholder: the object's too. ".." after a link leaves
 * from where the link points, as the kernel resolves it: not an object there. */
SHIM_TEST(symlink)
{
    char alias[2048], path[4200];
    snprintf(alias, sizeof(alias), "%s/alias-to-object", fx_base());
    CHECK(symlink(fx_path(0), alias) == 0);
    int fd = open(alias, O_RDONLY);
    check_ours(fd, 0);
    close(fd);
    CHECK_ERRNO(open(alias, O_RDWR | O_TRUNC), EROFS);
    CHECK_ERRNO(open(alias, O_RDONLY | O_NOFOLLOW), ELOOP);
    CHECK(fx_id_of_path(fx_path(0)).size == fx_size(0));
    CHECK(fopen_reads(alias, 0));
    CHECK(unlink(alias) == 0);

    snprintf(alias, sizeof(alias), "%s/alias-to-model", fx_base());
    CHECK(symlink(fx_model_dir(), alias) == 0);
    snprintf(path, sizeof(path), "%s/sub/dir/weights.bin", alias);
    fd = open(path, O_RDONLY);
    check_ours(fd, 1);
    close(fd);
    CHECK(unlink(alias) == 0);

    snprintf(alias, sizeof(alias), "%s/alias.bin", fx_model_dir()); /* inside, relative */
    CHECK(symlink("sub/dir/weights.bin", alias) == 0);
    fx_reset();
    fd = open(alias, O_RDONLY);
    check_ours(fd, 1);
    close(fd);
    CHECK(unlink(alias) == 0);

    snprintf(alias, sizeof(alias), "%s/hard-alias", fx_base());
    CHECK(link(fx_path(2), alias) == 0);
    fd = open(alias, O_RDONLY);
    check_ours(fd, 2);
    close(fd);
    CHECK(unlink(alias) == 0);

    /* MODEL_DIR/away/../<object 0's name>, away -> <base>/model2: <base>/<that name>. */
    snprintf(alias, sizeof(alias), "%s/away", fx_model_dir());
    snprintf(path, sizeof(path), "%s/model2", fx_base());
    CHECK(symlink(path, alias) == 0);
    snprintf(path, sizeof(path), "%s/away/../model2/%s", fx_model_dir(), fx_name(0));
    fd = open(path, O_RDONLY);
    CHECK(fd >= 0 && fx_reads_outside(fd));
    close(fd);
    CHECK(unlink(alias) == 0);
}

/* A reopen of an fd of ours through /proc/self/fd reaches the data file itself: tracked too
 * (its reads wait), read-only (writing or truncating it: EROFS), by open or fopen. */
SHIM_TEST(proc_self_fd)
{
    int fd = open(fx_path(0), O_RDONLY);
    char self[64];
    snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
    int again = open(self, O_RDONLY);
    check_ours(again, 0);
    close(again);
    CHECK_ERRNO(open(self, O_RDWR), EROFS);
    CHECK_ERRNO(open(self, O_WRONLY | O_TRUNC), EROFS);
    CHECK(fx_id_of_path(fx_data_path(0)).size == fx_size(0));
    CHECK(fopen_reads(self, 0));
    close(fd);
}

/* A trailing "/" names a directory: an object is a file (ENOTDIR, as the kernel says). */
SHIM_TEST(trailing_slash)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/", fx_path(0));
    uint32_t w = fx_wanted();
    CHECK_ERRNO(open(path, O_RDONLY), ENOTDIR);
    CHECK_ERRNO(openat(AT_FDCWD, path, O_RDONLY), ENOTDIR);
    CHECK(fopen(path, "r") == NULL && errno == ENOTDIR);
    snprintf(path, sizeof(path), "%s/.", fx_path(1));
    CHECK_ERRNO(open(path, O_RDONLY), ENOTDIR);
    CHECK(fx_wanted() == w);
}

int main(int argc, char **argv) { return fx_main(argc, argv); }
