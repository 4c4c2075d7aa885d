/* materialize.c: MODEL_DIR as the prefix's files and directories, and nothing else. Every
 * file and directory the owner creates there is recorded in the session's manifest
 * ("materialized": 'f' or 'd', the absolute path, a NUL), and removed again from it when the
 * session ends: a file or directory ossc did not create is never removed. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "session.h"

#define MANIFEST "materialized"
#define MANIFEST_MAX (64u << 20)

/* The one check of a key's name, for MODEL_DIR and for `ossc get` (through the binding). */
OSSC_API int ossc_relative_name(const char *key, const char *prefix, const char **out,
                                ossc_error *err)
{
    size_t pl = strlen(prefix);
    const char *rel = strncmp(key, prefix, pl) == 0 ? key + pl : key;
    *out = NULL;
    if (!*rel || rel[strlen(rel) - 1] == '/')
        return 0;
    for (const char *p = rel;;) {
        size_t n = strcspn(p, "/");
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.')) {
            err_set(err, OSSC_E_PROTOCOL, "refusing key '%s': it would land outside the directory "
                    "it is mapped to", key);
            return OSSC_E_PROTOCOL;
        }
        if (!p[n])
            break;
        p += n + 1;
    }
    *out = rel;
    return 0;
}

void materialize_record(int manifest_fd, char kind, const char *path)
{
    if (manifest_fd < 0)
        return;
    char entry[OSSC_MODEL_DIR_MAX + OSSC_DATA_PATH_MAX + 2];
    int n = snprintf(entry, sizeof(entry), "%c%s", kind, path);
    if (n > 0 && (size_t)n < sizeof(entry) && write(manifest_fd, entry, (size_t)n + 1) < 0)
        LOGW("cannot record %s in the session: %s", path, strerror(errno));
}

int materialize_dirs(int manifest_fd, const char *path, ossc_error *err)
{
    char buf[OSSC_MODEL_DIR_MAX + OSSC_DATA_PATH_MAX];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || !*p) {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, 0755) == 0) {
                materialize_record(manifest_fd, 'd', buf);
            } else if (errno != EEXIST) {
                err_set(err, OSSC_E_IO, "cannot create directory %s: %s", buf, strerror(errno));
                err->sys_errno = errno;
                return OSSC_E_IO;
            }
            if (!saved)
                return 0;
            *p = saved;
        }
    }
}

int materialize_file(int manifest_fd, const char *path, ossc_error *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd >= 0) {
        materialize_record(manifest_fd, 'f', path);
        return fd;
    }
    if (errno == EEXIST) /* allowNonEmptyModelDir: the user's file is filled, not ours */
        fd = open(path, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        err_set(err, OSSC_E_IO, "cannot create %s: %s", path, strerror(errno));
    return fd;
}

int materialize_check_empty(const char *dir, bool allow_non_empty, ossc_error *err)
{
    if (allow_non_empty)
        return 0;
    DIR *d = opendir(dir);
    if (!d) {
        err_set(err, OSSC_E_IO, "cannot open MODEL_DIR %s: %s", dir, strerror(errno));
        return OSSC_E_IO;
    }
    struct dirent *e;
    bool empty = true;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            empty = false;
    closedir(d);
    if (!empty) {
        err_set(err, OSSC_E_CONFIG, "MODEL_DIR %s is not empty and no session of ossc fills "
                "it: point it at a new or empty directory, or set allowNonEmptyModelDir=yes "
                "to fill it", dir);
        return OSSC_E_CONFIG;
    }
    return 0;
}

void materialize_undo(int dirfd)
{
    int fd = openat(dirfd, MANIFEST, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return;
    struct stat st;
    char *buf = NULL;
    size_t len = 0;
    if (fstat(fd, &st) == 0 && st.st_uid == geteuid() && st.st_size > 0 &&
        (uint64_t)st.st_size <= MANIFEST_MAX && (buf = malloc((size_t)st.st_size + 1))) {
        ssize_t n = pread(fd, buf, (size_t)st.st_size, 0);
        len = n > 0 ? (size_t)n : 0;
        buf[len] = '\0';
    }
    close(fd);
    /* Files first (only regular files and links: a directory in a file's place is not
     * ours), then directories newest first (rmdir keeps one someone filled). */
    for (size_t i = 0; i < len; i += strlen(buf + i) + 1) {
        struct stat fst;
        if (buf[i] == 'f' && lstat(buf + i + 1, &fst) == 0 && !S_ISDIR(fst.st_mode))
            unlink(buf + i + 1);
    }
    for (size_t end = len; end > 0;) {
        size_t start = end - 1;
        while (start > 0 && buf[start - 1] != '\0')
            start--;
        if (buf[start] == 'd')
            rmdir(buf + start + 1);
        end = start;
    }
    free(buf);
    unlinkat(dirfd, MANIFEST, 0);
}

int materialize_open_manifest(int dirfd)
{
    return openat(dirfd, MANIFEST, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_NOFOLLOW | O_CLOEXEC,
                  0600);
}
