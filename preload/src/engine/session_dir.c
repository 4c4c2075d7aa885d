/* session_dir.c: the session's directory in /dev/shm: opening it and its files only when they
 * are this uid's own and closed to others (a planted directory or symlink is never used), the
 * locks that tell whether its owner lives and whether anyone uses it, and removing it. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <unistd.h>

#include "session.h"

int session_dir_open(const char *dir, bool create, const char **why)
{
    *why = NULL;
    if (create && mkdir(dir, 0700) != 0 && errno != EEXIST)
        return -1;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ELOOP || errno == ENOTDIR) {
            *why = "it is not a directory";
            errno = EPERM;
        }
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_uid != geteuid())
        *why = "another user owns it";
    else if (st.st_mode & 077)
        *why = "other users can open it";
    if (*why) {
        close(fd);
        errno = EPERM;
        return -1;
    }
    return fd;
}

int session_file_open(int dirfd, const char *name, int flags)
{
    int fd = openat(dirfd, name, flags | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
        (st.st_mode & 077)) {
        close(fd);
        errno = EPERM;
        return -1;
    }
    return fd;
}

static bool lock_free(int dirfd, const char *name, int how)
{
    int fd = session_file_open(dirfd, name, O_RDONLY);
    if (fd < 0)
        return true;
    bool free_ = flock(fd, how | LOCK_NB) == 0;
    close(fd);
    return free_;
}

bool session_owner_alive(int dirfd) { return !lock_free(dirfd, "control", LOCK_SH); }

bool session_has_users(int dirfd) { return !lock_free(dirfd, "users", LOCK_EX); }

/* Empties and removes a data directory, only if it is a directory of ours. */
static void remove_data_dir(const char *path)
{
    const char *why;
    int fd = session_dir_open(path, false, &why);
    if (fd < 0)
        return;
    DIR *d = fdopendir(fd);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.')
            unlinkat(fd, e->d_name, 0);
    if (d)
        closedir(d);
    else
        close(fd);
    rmdir(path);
}

/* The data directory the control file names (in cacheDir, it may lie elsewhere). */
static void clear_data(int dirfd)
{
    int fd = session_file_open(dirfd, "control", O_RDONLY);
    if (fd < 0)
        return;
    ossc_session_header h;
    bool ok = pread(fd, &h, sizeof(h), 0) == (ssize_t)sizeof(h) &&
              h.magic == OSSC_SESSION_MAGIC && h.version == OSSC_SESSION_VERSION &&
              memchr(h.data_dir, 0, sizeof(h.data_dir));
    close(fd);
    if (ok)
        remove_data_dir(h.data_dir);
}

void session_dir_clear(int dirfd, const char *path)
{
    materialize_undo(dirfd);
    clear_data(dirfd);
    /* Data directories of owners that died before publishing a control file. */
    int fd = dup(dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (strncmp(e->d_name, "data.", 5) != 0)
            continue;
        char sub[OSSC_SESSION_PATH_MAX + 300];
        snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
        remove_data_dir(sub);
    }
    if (d)
        closedir(d);
    else if (fd >= 0)
        close(fd);
    static const char *const files[] = {"control", "control.new", "users", "owner.log"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        unlinkat(dirfd, files[i], 0);
}

int session_reap(const char *path, bool force)
{
    const char *why;
    int dirfd = session_dir_open(path, false, &why);
    if (dirfd < 0)
        return -1;
    int rc;
    if (flock(dirfd, LOCK_EX | LOCK_NB) != 0 || session_owner_alive(dirfd)) {
        rc = 2; /* a live owner, or one taking it over */
    } else if (!force && session_has_users(dirfd)) {
        rc = 0;
    } else {
        session_dir_clear(dirfd, path);
        rc = rmdir(path) == 0 ? 1 : 0;
    }
    close(dirfd); /* the lock goes with it */
    return rc;
}
