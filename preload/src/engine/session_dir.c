/* session_dir.c: the session's directory in /dev/shm: opening it and its files only when they
 * are this uid's own and closed to others, or shared as sharedGroup says (a planted directory
 * or symlink is never used), the
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
#include "session_check.h"
#include "session_group.h"

bool session_in_group(gid_t gid)
{
    if (getegid() == gid)
        return true;
    gid_t groups[256];
    int count = getgroups(256, groups);
    for (int i = 0; i < count; i++)
        if (groups[i] == gid)
            return true;
    return false;
}

int session_group(const char *name, long *gid, ossc_error *err)
{
    if (ossc_session_group(name, gid) != 0) {
        err_set(err, OSSC_E_CONFIG, "sharedGroup: no group named '%s'", name);
        return OSSC_E_CONFIG;
    }
    if (*gid < 0 || geteuid() == 0 || session_in_group((gid_t)*gid))
        return 0;
    err_set(err, OSSC_E_CONFIG, "sharedGroup: this process is not in group '%s', so it cannot "
            "share its session with it", name);
    return OSSC_E_CONFIG;
}

/* What this process just created goes to the sharedGroup: the directory setgid (what is made
 * in it is the group's too), with group read (and search) and nothing for others. */
static int share(int fd, long group, mode_t mode)
{
    if (group < 0)
        return 0;
    return fchown(fd, (uid_t)-1, (gid_t)group) == 0 && fchmod(fd, mode) == 0 ? 0 : -1;
}

/* *why and EPERM when what fd is may not be used (ossc_session_access). */
static int check_access(int fd, bool dir, long group, const char **why)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || (dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)))
        *why = dir ? "it is not a directory" : "it is not a regular file";
    else
        *why = ossc_session_access(st.st_uid, st.st_gid, st.st_mode, geteuid(), group);
    if (!*why)
        return fd;
    close(fd);
    errno = EPERM;
    return -1;
}

int session_dir_open(const char *dir, bool create, long group, const char **why)
{
    *why = NULL;
    bool made = create && mkdir(dir, 0700) == 0;
    if (create && !made && errno != EEXIST)
        return -1;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ELOOP || errno == ENOTDIR) {
            *why = "it is not a directory";
            errno = EPERM;
        }
        return -1;
    }
    if (made && share(fd, group, 02750) != 0) {
        int e = errno;
        close(fd);
        rmdir(dir);
        errno = e;
        return -1;
    }
    return check_access(fd, true, group, why);
}

int session_file_open(int dirfd, const char *name, int flags, long group)
{
    int fd = openat(dirfd, name, flags | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    if ((flags & O_EXCL) && share(fd, group, 0640) != 0) {
        close(fd);
        return -1;
    }
    const char *why;
    return check_access(fd, false, group, &why);
}

int session_file_share(int fd, long group) { return share(fd, group, 0640); }

static bool lock_free(int dirfd, const char *name, int how, long group)
{
    int fd = session_file_open(dirfd, name, O_RDONLY, group);
    if (fd < 0)
        return true;
    bool free_ = flock(fd, how | LOCK_NB) == 0;
    close(fd);
    return free_;
}

bool session_owner_alive(int dirfd, long group)
{
    return !lock_free(dirfd, "control", LOCK_SH, group);
}

bool session_has_users(int dirfd)
{
    return !lock_free(dirfd, "users", LOCK_EX, OSSC_SESSION_OWN_ANY);
}

/* Empties and removes a data directory, only if it is a directory of ours. */
static void remove_data_dir(const char *path)
{
    const char *why;
    int fd = session_dir_open(path, false, OSSC_SESSION_OWN_ANY, &why);
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
    int fd = session_file_open(dirfd, "control", O_RDONLY, OSSC_SESSION_OWN_ANY);
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
    int dirfd = session_dir_open(path, false, OSSC_SESSION_OWN_ANY, &why);
    if (dirfd < 0)
        return -1;
    int rc;
    if (flock(dirfd, LOCK_EX | LOCK_NB) != 0 ||
        session_owner_alive(dirfd, OSSC_SESSION_OWN_ANY)) {
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
