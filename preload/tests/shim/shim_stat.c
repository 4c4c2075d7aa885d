/* shim_stat.c: stat, stat64, lstat, lstat64, fstatat, fstatat64, the glibc < 2.33 entry points
 * __xstat, __xstat64, __lxstat, __lxstat64, __fxstatat, __fxstatat64, and statx. A large
 * object's path, however spelled, describes its data file (so stat(path) and fstat(open(path))
 * agree, as cp checks), with the object's size; a released object's describes its
 * placeholder; everything else is the real call. None of them waits. */
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "fixture.h"

/* The version argument of glibc's old entry points (_STAT_VER, gone from its headers). */
#if defined(__x86_64__)
#define STAT_VER 1
#elif defined(__i386__)
#define STAT_VER 3
#else
#define STAT_VER 0
#endif

typedef struct statter {
    const char *name;
    int (*fn)(const struct statter *s, int dirfd, const char *path, int flags, fx_id *out);
    bool at;       /* takes a directory fd and flags */
    void *entry;   /* the old entry points, looked up: glibc >= 2.33 no longer links them */
} statter;

static fx_id from_stat(const struct stat *st)
{
    return (fx_id){st->st_dev, st->st_ino, (unsigned long long)st->st_size, st->st_mode};
}

static fx_id from_stat64(const struct stat64 *st)
{
    return (fx_id){st->st_dev, st->st_ino, (unsigned long long)st->st_size, st->st_mode};
}

#define PLAIN(name, type, conv)                                                            \
    static int by_##name(const statter *s, int d, const char *p, int f, fx_id *out)       \
    {                                                                                      \
        (void)s, (void)d, (void)f;                                                         \
        struct type st;                                                                    \
        int r = name(p, &st);                                                              \
        *out = r == 0 ? conv(&st) : (fx_id){0};                                            \
        return r;                                                                          \
    }
PLAIN(stat, stat, from_stat)
PLAIN(stat64, stat64, from_stat64)
PLAIN(lstat, stat, from_stat)
PLAIN(lstat64, stat64, from_stat64)

#define AT(name, type, conv)                                                               \
    static int by_##name(const statter *s, int d, const char *p, int f, fx_id *out)       \
    {                                                                                      \
        (void)s;                                                                           \
        struct type st;                                                                    \
        int r = name(d, p, &st, f);                                                        \
        *out = r == 0 ? conv(&st) : (fx_id){0};                                            \
        return r;                                                                          \
    }
AT(fstatat, stat, from_stat)
AT(fstatat64, stat64, from_stat64)

#define XSTAT(name, type, conv)                                                            \
    static int by_##name(const statter *s, int d, const char *p, int f, fx_id *out)       \
    {                                                                                      \
        (void)d, (void)f;                                                                  \
        struct type st;                                                                    \
        int (*entry)(int, const char *, struct type *) =                                   \
            (int (*)(int, const char *, struct type *))s->entry;                           \
        int r = entry(STAT_VER, p, &st);                                                   \
        *out = r == 0 ? conv(&st) : (fx_id){0};                                            \
        return r;                                                                          \
    }
XSTAT(__xstat, stat, from_stat)
XSTAT(__xstat64, stat64, from_stat64)
XSTAT(__lxstat, stat, from_stat)
XSTAT(__lxstat64, stat64, from_stat64)

#define FXSTATAT(name, type, conv)                                                         \
    static int by_##name(const statter *s, int d, const char *p, int f, fx_id *out)       \
    {                                                                                      \
        struct type st;                                                                    \
        int (*entry)(int, int, const char *, struct type *, int) =                         \
            (int (*)(int, int, const char *, struct type *, int))s->entry;                 \
        int r = entry(STAT_VER, d, p, &st, f);                                             \
        *out = r == 0 ? conv(&st) : (fx_id){0};                                            \
        return r;                                                                          \
    }
FXSTATAT(__fxstatat, stat, from_stat)
FXSTATAT(__fxstatat64, stat64, from_stat64)

static int by_statx(const statter *s, int d, const char *p, int f, fx_id *out)
{
    (void)s;
    struct statx st;
    int r = statx(d, p, f, STATX_BASIC_STATS, &st);
    *out = r == 0 ? (fx_id){makedev(st.stx_dev_major, st.stx_dev_minor), st.stx_ino,
                            st.stx_size, st.stx_mode}
                  : (fx_id){0};
    return r;
}

static fx_id stat_with(const statter *s, int dirfd, const char *path, int flags)
{
    fx_id id;
    errno = 0;
    if (s->fn(s, dirfd, path, flags, &id) != 0)
        fprintf(stderr, "  %s(%s): %s\n", s->name, path, strerror(errno));
    return id;
}

static bool same(fx_id got, fx_id want, uint64_t size)
{
    bool ok = fx_same_file(got, want) && got.size == size;
    if (!ok)
        fprintf(stderr, "  got dev %llu ino %llu size %llu, expected dev %llu ino %llu size %llu\n",
                got.dev, got.ino, got.size, want.dev, want.ino, (unsigned long long)size);
    return ok;
}

static void check_statter(const statter *s)
{
    fx_id data0 = fx_id_of_path(fx_data_path(0)), data1 = fx_id_of_path(fx_data_path(1));
    uint32_t w = fx_wanted();

    /* An object's path: its data file, its size, a regular file. */
    fx_id id = stat_with(s, AT_FDCWD, fx_path(0), 0);
    CHECK(same(id, data0, fx_size(0)) && S_ISREG(id.mode));
    /* Every spelling, relative to the current directory or a directory fd. */
    char path[4200];
    snprintf(path, sizeof(path), "%s/./sub//dir/../dir/weights.bin", fx_model_dir());
    CHECK(same(stat_with(s, AT_FDCWD, path, 0), data1, fx_size(1)));
    int dir = open(fx_model_dir(), O_RDONLY | O_DIRECTORY);
    CHECK(fchdir(dir) == 0);
    CHECK(same(stat_with(s, AT_FDCWD, "sub/dir/weights.bin", 0), data1, fx_size(1)));
    CHECK(chdir(fx_base()) == 0);
    if (s->at) {
        int sub = openat(dir, "sub", O_RDONLY | O_DIRECTORY);
        CHECK(same(stat_with(s, sub, "dir/weights.bin", 0), data1, fx_size(1)));
        CHECK(same(stat_with(s, sub, "../model-00001-of-00002.safetensors",
                             AT_SYMLINK_NOFOLLOW), data0, fx_size(0)));
        close(sub);
        /* "" with AT_EMPTY_PATH names the fd itself: of ours, that is the data file. */
        int fd = open(fx_path(0), O_RDONLY);
        CHECK(same(stat_with(s, fd, "", AT_EMPTY_PATH), data0, fx_size(0)));
        close(fd);
    }
    /* Through ".." from outside, a symbolic link to MODEL_DIR, one to the object (the link
     * itself for lstat), a hard link: the data file too. With a trailing "/": ENOTDIR. */
    snprintf(path, sizeof(path), "%s/model2/../model/%s", fx_base(), fx_name(0));
    CHECK(same(stat_with(s, AT_FDCWD, path, 0), data0, fx_size(0)));
    char alias[2048];
    snprintf(alias, sizeof(alias), "%s/link-to-model", fx_base());
    CHECK(symlink(fx_model_dir(), alias) == 0);
    snprintf(path, sizeof(path), "%s/%s", alias, fx_name(1));
    CHECK(same(stat_with(s, AT_FDCWD, path, 0), data1, fx_size(1)));
    CHECK(unlink(alias) == 0);
    CHECK(symlink(fx_path(0), alias) == 0);
    if (strstr(s->name, "lstat") || strstr(s->name, "lxstat"))
        CHECK(S_ISLNK(stat_with(s, AT_FDCWD, alias, 0).mode));
    else
        CHECK(same(stat_with(s, AT_FDCWD, alias, 0), data0, fx_size(0)));
    CHECK(unlink(alias) == 0);
    CHECK(link(fx_path(0), alias) == 0);
    CHECK(same(stat_with(s, AT_FDCWD, alias, 0), data0, fx_size(0)));
    CHECK(unlink(alias) == 0);
    snprintf(path, sizeof(path), "%s/", fx_path(0));
    CHECK_ERRNO(s->fn(s, AT_FDCWD, path, 0, &(fx_id){0}), ENOTDIR);

    /* What fstat of an open says, as cp compares them. */
    int fd = open(fx_path(1), O_RDONLY);
    CHECK(same(stat_with(s, AT_FDCWD, fx_path(1), 0), fx_id_of_fd(fd), fx_size(1)));
    close(fd);

    /* A released object: its placeholder, with the same size, and no fetch. */
    fx_release(1);
    CHECK(same(stat_with(s, AT_FDCWD, fx_path(1), 0), fx_placeholder(1), fx_size(1)));

    /* Outside MODEL_DIR, small files, directories, missing names: the real call. */
    fx_id outside = fx_id_of_path(fx_outside());
    CHECK(same(stat_with(s, AT_FDCWD, fx_outside(), 0), outside, FX_OUTSIDE_SIZE));
    CHECK(same(stat_with(s, AT_FDCWD, fx_sibling(), 0), fx_id_of_path(fx_sibling()),
               FX_OUTSIDE_SIZE));
    CHECK(same(stat_with(s, AT_FDCWD, fx_small(), 0), fx_small_id(), fx_small_id().size));
    CHECK(S_ISDIR(stat_with(s, AT_FDCWD, fx_model_dir(), 0).mode));
    if (s->at)
        CHECK(same(stat_with(s, dir, "config.json", 0), fx_small_id(), fx_small_id().size));
    close(dir);
    fx_id none;
    snprintf(path, sizeof(path), "%s/no-such-file", fx_model_dir());
    CHECK_ERRNO(s->fn(s, AT_FDCWD, path, 0, &none), ENOENT);
    snprintf(path, sizeof(path), "%s/sub/dir", fx_path(0)); /* below a file */
    CHECK_ERRNO(s->fn(s, AT_FDCWD, path, 0, &none), ENOTDIR);
    CHECK(fx_wanted() == w);
}

/* The statter for name, with its entry point looked up when it is one of glibc's old ones.
 * NULL (and a SKIP) when this libc has none. */
static const statter *old_entry(statter *s)
{
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    void *in_libc = libc ? dlsym(libc, s->name) : NULL;
    if (libc)
        dlclose(libc);
    if (!in_libc) {
        fx_skip("this libc has no such entry point");
        return NULL;
    }
    s->entry = dlsym(RTLD_DEFAULT, s->name); /* the shim's, if it is loaded first */
    return s;
}

/* One SHIM_TEST line per hook, as CMakeLists.txt finds them. */
SHIM_TEST(stat) { check_statter(&(statter){"stat", by_stat, false, NULL}); }
SHIM_TEST(stat64) { check_statter(&(statter){"stat64", by_stat64, false, NULL}); }
SHIM_TEST(lstat) { check_statter(&(statter){"lstat", by_lstat, false, NULL}); }
SHIM_TEST(lstat64) { check_statter(&(statter){"lstat64", by_lstat64, false, NULL}); }
SHIM_TEST(fstatat) { check_statter(&(statter){"fstatat", by_fstatat, true, NULL}); }
SHIM_TEST(fstatat64) { check_statter(&(statter){"fstatat64", by_fstatat64, true, NULL}); }
SHIM_TEST(statx) { check_statter(&(statter){"statx", by_statx, true, NULL}); }
SHIM_TEST(__xstat)
{
    const statter *s = old_entry(&(statter){"__xstat", by___xstat, false, NULL});
    if (s)
        check_statter(s);
}
SHIM_TEST(__xstat64)
{
    const statter *s = old_entry(&(statter){"__xstat64", by___xstat64, false, NULL});
    if (s)
        check_statter(s);
}
SHIM_TEST(__lxstat)
{
    const statter *s = old_entry(&(statter){"__lxstat", by___lxstat, false, NULL});
    if (s)
        check_statter(s);
}
SHIM_TEST(__lxstat64)
{
    const statter *s = old_entry(&(statter){"__lxstat64", by___lxstat64, false, NULL});
    if (s)
        check_statter(s);
}
SHIM_TEST(__fxstatat)
{
    const statter *s = old_entry(&(statter){"__fxstatat", by___fxstatat, true, NULL});
    if (s)
        check_statter(s);
}
SHIM_TEST(__fxstatat64)
{
    const statter *s = old_entry(&(statter){"__fxstatat64", by___fxstatat64, true, NULL});
    if (s)
        check_statter(s);
}

int main(int argc, char **argv) { return fx_main(argc, argv); }
